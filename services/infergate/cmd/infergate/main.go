// Command infergate is the CLI for keys, deployments, auth toggles and
// admin tokens, and runs the one-process stack (`infergate dev`).
package main

import (
	"os"

	"github.com/infergate/infergate/services/infergate/internal/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
