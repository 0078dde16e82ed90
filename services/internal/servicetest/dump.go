package servicetest

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/readmodel"
)

// DumpStream returns every stored stream message — subject, headers and
// raw data — so a test can search it for what must never be there.
func (b *Backend) DumpStream(t *testing.T) string {
	t.Helper()
	ctx := t.Context()
	js := natstest.JetStreamOn(t, b.NATS)
	stream, err := js.Stream(ctx, "INFERGATE_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	last, err := b.Events.LastSequence(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for seq := uint64(1); seq <= last; seq++ {
		msg, err := stream.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		fmt.Fprintf(&sb, "%d %s %v %q\n", seq, msg.Subject, msg.Header, msg.Data)
	}
	return sb.String()
}

// DumpReadModel returns every row the read model holds for the projects:
// for PostgreSQL every row of every table of its schema, for memory what
// its queries return.
func (b *Backend) DumpReadModel(t *testing.T, projects ...string) string {
	t.Helper()
	ctx := t.Context()
	var sb strings.Builder
	if b.Kind == Postgres {
		conn, err := pgx.Connect(ctx, b.pgURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = $1`, b.pgSchema)
		if err != nil {
			t.Fatal(err)
		}
		tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		for _, table := range tables {
			q := fmt.Sprintf(`SELECT row_to_json(t)::text FROM %s t`, pgx.Identifier{b.pgSchema, table}.Sanitize())
			rows, err := conn.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&sb, "%s: %s\n", table, strings.Join(lines, "\n"))
		}
		return sb.String()
	}
	for _, p := range projects {
		keys, err := b.Reads.ListKeys(ctx, p, readmodel.Page{Limit: 100000})
		if err != nil {
			t.Fatal(err)
		}
		deps, err := b.Reads.ListDeployments(ctx, p, readmodel.Page{Limit: 100000})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&sb, "%+v\n%+v\n", keys, deps)
	}
	return sb.String()
}
