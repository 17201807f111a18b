// Package migrations holds the ace schema as tern migrations. The whole SQL API lives in these
// files; the Go side only embeds them.
package migrations

import "embed"

// FS holds the numbered migration files, applied in order by sqlapi.Install.
//
//go:embed *.sql
var FS embed.FS
