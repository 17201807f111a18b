package shim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
)

// duplicateKey walks raw's tokens and returns an error naming the first key that appears twice
// in one object, at any depth. encoding/json keeps the last of duplicates, so a body with
// "dry_run": true, "dry_run": false would otherwise be a real repair to the reader that saw
// only the first.
func duplicateKey(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var dup *statusError
	if err := walkValue(dec, "$"); errors.As(err, &dup) {
		return dup
	}
	return nil // a syntax error is json.Unmarshal's to report
}

func walkValue(dec *json.Decoder, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		return walkObject(dec, path)
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if err := walkValue(dec, path+"["+strconv.Itoa(i)+"]"); err != nil {
				return err
			}
		}
		_, err = dec.Token() // ]
		return err
	}
	return nil
}

func walkObject(dec *json.Decoder, path string) error {
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		if seen[key] {
			return &statusError{http.StatusBadRequest, fmt.Sprintf("duplicate key %q in the request body (in %s): each key may appear once in an object", key, path)}
		}
		seen[key] = true
		if err := walkValue(dec, path+"."+key); err != nil {
			return err
		}
	}
	_, err := dec.Token() // }
	return err
}
