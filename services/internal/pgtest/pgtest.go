// Package pgtest gives tests a real PostgreSQL server: its URL, and fresh
// schemas dropped when the test ends.
//
// The server is INFERGATE_TEST_DATABASE_URL, or a local one with trust
// auth (DefaultURL). A test that needs it is skipped when it cannot be
// reached, unless INFERGATE_TEST_REQUIRE_POSTGRES=1 (as in CI), where that
// fails the test instead.
package pgtest

import (
	"context"
	"crypto/rand"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

const (
	// DefaultURL is the server used when INFERGATE_TEST_DATABASE_URL is
	// unset.
	DefaultURL = "postgres://root@127.0.0.1:5432/test?sslmode=disable"
	// URLEnv names the variable that overrides DefaultURL.
	URLEnv = "INFERGATE_TEST_DATABASE_URL"
	// RequireEnv, set to 1, turns a skip for an unreachable server into a
	// failure.
	RequireEnv = "INFERGATE_TEST_REQUIRE_POSTGRES"
)

// reachable remembers, per URL, whether the server answered, so a test
// binary dials each server once rather than once per test.
var reachable sync.Map // URL → func() error

// URL returns the test server's URL. It skips the test (or fails it, under
// INFERGATE_TEST_REQUIRE_POSTGRES=1) when the server cannot be reached.
func URL(t testing.TB) string {
	t.Helper()
	url := os.Getenv(URLEnv)
	if url == "" {
		url = DefaultURL
	}
	check, _ := reachable.LoadOrStore(url, sync.OnceValue(func() error { return ping(url) }))
	if err := check.(func() error)(); err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("pgtest: PostgreSQL is required (%s=1) but unreachable: %v", RequireEnv, err)
		}
		t.Skipf("pgtest: PostgreSQL unreachable, skipping (set %s to a reachable server): %v", URLEnv, err)
	}
	return url
}

func ping(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.Ping(ctx)
}

// Schema returns the name of a schema no other test uses (it is not
// created) and drops it, with everything in it, when the test ends.
func Schema(t testing.TB) string {
	t.Helper()
	url := URL(t)
	name := "test_" + strings.ToLower(rand.Text())
	t.Cleanup(func() {
		// The test's context has ended by now.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Errorf("pgtest: drop schema %s: %v", name, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{name}.Sanitize()+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema %s: %v", name, err)
		}
	})
	return name
}
