package cdc

// Classify is classify, for the tests that check it against the server's own errors.
var Classify = classify
