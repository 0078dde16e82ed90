package postgres_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/pgtest"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/readmodel/postgres"
	"github.com/infergate/infergate/services/internal/readmodel/readmodeltest"
)

// open opens a Store on schema, closed when the test ends.
func open(t *testing.T, schema string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), postgres.Config{URL: pgtest.URL(t), Schema: schema})
	if err != nil {
		t.Fatalf("Open(schema %s): %v", schema, err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	readmodeltest.Run(t, func(t *testing.T) readmodel.Store {
		return open(t, pgtest.Schema(t))
	})
}

func TestReopenKeepsCheckpointAndData(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	schema := pgtest.Schema(t)
	recs := readmodeltest.Records(
		[]*eventv1.Event{keyCreated("ci-runner", "key-1")},
		[]*eventv1.Event{keyCreated("notebook", "key-2")},
	)
	first := open(t, schema)
	for _, r := range recs {
		if err := first.Apply(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	first.Close()

	again := open(t, schema)
	if got, err := again.Checkpoint(ctx); err != nil || got.Sequence != 2 {
		t.Fatalf("Checkpoint() after reopening = %+v, %v; want sequence 2", got, err)
	}
	keys, err := again.ListKeys(ctx, "team-a", readmodel.Page{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Name != "ci-runner" || keys[1].Name != "notebook" {
		t.Fatalf("ListKeys after reopening = %+v; want ci-runner and notebook", keys)
	}
	// What was applied before the restart stays applied once.
	if err := again.Apply(ctx, recs[0]); err != nil {
		t.Fatal(err)
	}
	if got, _ := again.Checkpoint(ctx); got.Sequence != 2 {
		t.Fatalf("Checkpoint() = %+v after re-applying record 1; want sequence 2", got)
	}
}

func TestConcurrentOpens(t *testing.T) {
	t.Parallel()
	schema := pgtest.Schema(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			s, err := postgres.Open(t.Context(), postgres.Config{URL: pgtest.URL(t), Schema: schema})
			if err == nil {
				_, err = s.Checkpoint(t.Context())
				s.Close()
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open #%d racing on a fresh schema: %v", i, err)
		}
	}
	// Every migration ran exactly once.
	conn := connect(t)
	var applied int
	if err := conn.QueryRow(t.Context(),
		`SELECT count(*) FROM `+pgx.Identifier{schema}.Sanitize()+`.schema_migrations`).Scan(&applied); err != nil {
		t.Fatal(err)
	}
	migs, err := postgres.MigrationNames()
	if err != nil {
		t.Fatal(err)
	}
	if applied != len(migs) {
		t.Errorf("schema_migrations has %d rows; want %d, one per migration", applied, len(migs))
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, cfg := range []postgres.Config{
		{},
		{URL: "postgres://x@127.0.0.1/db", Schema: "Upper"},
		{URL: "postgres://x@127.0.0.1/db", Schema: "bad;drop"},
		{URL: "postgres://x@127.0.0.1/db", Schema: `a"b`},
		{URL: "postgres://x@127.0.0.1/db", Schema: "1abc"},
		{URL: "postgres://x@127.0.0.1/db", Schema: strings.Repeat("a", 64)},
	} {
		if _, err := postgres.Open(t.Context(), cfg); !errors.Is(err, postgres.ErrInvalidConfig) {
			t.Errorf("Open(%+v): err = %v; want ErrInvalidConfig", cfg, err)
		}
	}
}

// TestNoSecretColumn guards §4 of the spec: no read-model row holds a
// secret or its hash.
func TestNoSecretColumn(t *testing.T) {
	t.Parallel()
	schema := pgtest.Schema(t)
	open(t, schema)
	rows, _ := connect(t).Query(t.Context(),
		`SELECT table_name || '.' || column_name FROM information_schema.columns WHERE table_schema = $1`, schema)
	cols, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if len(cols) == 0 {
		t.Fatal("no columns found")
	}
	for _, c := range cols {
		if strings.Contains(c, "secret") || strings.Contains(c, "sha") {
			t.Errorf("column %s looks like it holds a secret", c)
		}
	}
}

func connect(t *testing.T) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func keyCreated(name, id string) *eventv1.Event {
	return &eventv1.Event{
		Id:        id + "-created",
		Project:   "team-a",
		Aggregate: &eventv1.Aggregate{Type: eventv1.AggregateType_AGGREGATE_TYPE_KEY, Name: name},
		Payload: &eventv1.Event_KeyCreated{KeyCreated: &eventv1.KeyCreated{
			KeyId: id, Name: name, Hint: "ig_…" + id, SecretSha256: make([]byte, 32),
		}},
	}
}

func TestUsageConformance(t *testing.T) {
	t.Parallel()
	readmodeltest.RunUsage(t, func(t *testing.T) readmodel.UsageStore {
		return open(t, pgtest.Schema(t)).Usage()
	})
}
