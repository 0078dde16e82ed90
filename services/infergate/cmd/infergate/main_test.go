package main_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/infergate/infergate/services/internal/servicetest"
)

// TestDevStopsCleanly: `infergate dev` exits 0 on SIGTERM, whether it is
// still starting (its embedded NATS, read models, demo) or running.
func TestDevStopsCleanly(t *testing.T) {
	t.Parallel()
	bin := servicetest.Build(t, "infergate")
	for _, tc := range []struct {
		name string
		// file appears in the data dir when the stop should come.
		file string
	}{
		{"starting", "admin-token"}, // written before anything starts
		{"running", "api-url"},      // written once every part serves
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			p := servicetest.StartProcess(t, bin, nil, "dev", "--demo", "--data-dir", dir,
				"--api-addr", servicetest.FreeAddr(t), "--gateway-addr", servicetest.FreeAddr(t))
			servicetest.WaitFor(t, tc.file+" written", func(context.Context) error {
				_, err := os.Stat(filepath.Join(dir, tc.file))
				return err
			})
			p.Stop()
		})
	}
}
