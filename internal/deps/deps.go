package main

import (
	_ "github.com/google/uuid"
	_ "github.com/jackc/pglogrepl"
	_ "github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "github.com/jackc/tern/v2/migrate"
	_ "github.com/kelseyhightower/envconfig"
	_ "github.com/sourcegraph/conc"
	_ "github.com/spf13/cobra"
	_ "github.com/stretchr/testify/require"
)

func main() {}
