package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
	"github.com/infergate/infergate/services/internal/readmodel"
)

// Usage is the usage projection in the same schema and connection pool
// as the read model (its own tables and checkpoint: migrations/0003).
func (s *Store) Usage() readmodel.UsageStore {
	r := strings.NewReplacer("{{schema}}", pgx.Identifier{s.schema}.Sanitize())
	return &usageStore{s: s, q: usageQueries{
		lockCheckpoint:  r.Replace(`SELECT sequence FROM {{schema}}.usage_checkpoint FOR UPDATE`),
		setCheckpoint:   r.Replace(`UPDATE {{schema}}.usage_checkpoint SET sequence = $1`),
		checkpoint:      r.Replace(`SELECT sequence, stream, stream_created FROM {{schema}}.usage_checkpoint`),
		truncate:        r.Replace(`TRUNCATE {{schema}}.usage_buckets, {{schema}}.usage_last, {{schema}}.usage_senders`),
		resetCheckpoint: r.Replace(`UPDATE {{schema}}.usage_checkpoint SET sequence = 0, stream = $1, stream_created = $2`),
		sender:          r.Replace(`SELECT sequence FROM {{schema}}.usage_senders WHERE sender = $1 FOR UPDATE`),
		setSender: r.Replace(`INSERT INTO {{schema}}.usage_senders (sender, sequence) VALUES ($1, $2)
			ON CONFLICT (sender) DO UPDATE SET sequence = EXCLUDED.sequence`),
		addBucket: r.Replace(`INSERT INTO {{schema}}.usage_buckets AS b
			(project, deployment, key_name, minute, ok, client_errors, server_errors, refused, prompt_tokens, completion_tokens)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			ON CONFLICT (project, deployment, key_name, minute) DO UPDATE SET
			ok = b.ok + EXCLUDED.ok, client_errors = b.client_errors + EXCLUDED.client_errors,
			server_errors = b.server_errors + EXCLUDED.server_errors, refused = b.refused + EXCLUDED.refused,
			prompt_tokens = b.prompt_tokens + EXCLUDED.prompt_tokens,
			completion_tokens = b.completion_tokens + EXCLUDED.completion_tokens`),
		setLast: r.Replace(`INSERT INTO {{schema}}.usage_last AS l (project, deployment, key_name, last_used)
			VALUES ($1, $2, $3, $4)
			ON CONFLICT (project, deployment, key_name) DO UPDATE SET last_used = GREATEST(l.last_used, EXCLUDED.last_used)`),
		usage: r.Replace(`SELECT $4::bigint + ((minute - $4::bigint) / $6::bigint) * $6::bigint AS start,
			CASE WHEN $7 THEN key_name ELSE deployment END AS name,
			sum(ok)::bigint, sum(client_errors)::bigint, sum(server_errors)::bigint, sum(refused)::bigint,
			sum(prompt_tokens)::bigint, sum(completion_tokens)::bigint
			FROM {{schema}}.usage_buckets
			WHERE project = $1 AND ($2 = '' OR key_name = $2) AND ($3 = '' OR deployment = $3)
			AND minute >= $4 AND minute < $5
			GROUP BY 1, 2`),
		lastUsed: r.Replace(`SELECT deployment, key_name, last_used FROM {{schema}}.usage_last WHERE project = $1`),
	}}
}

type usageQueries struct {
	lockCheckpoint, setCheckpoint, checkpoint, truncate, resetCheckpoint string
	sender, setSender, addBucket, setLast, usage, lastUsed               string
}

type usageStore struct {
	s *Store
	q usageQueries
}

// Checkpoint implements follow.Consumer.
func (u *usageStore) Checkpoint(ctx context.Context) (follow.Checkpoint, error) {
	var (
		seq     int64
		stream  string
		created *time.Time
	)
	if err := u.s.pool.QueryRow(ctx, u.q.checkpoint).Scan(&seq, &stream, &created); err != nil {
		return follow.Checkpoint{}, fmt.Errorf("readmodel/postgres: usage checkpoint: %w", err)
	}
	cp := follow.Checkpoint{Stream: eventstore.Identity{Stream: stream}, Sequence: uint64(seq)}
	if created != nil {
		cp.Stream.Created = *created
	}
	return cp, nil
}

// Reset implements follow.Consumer: one transaction empties the usage
// tables and points the checkpoint at the start of the life to.
func (u *usageStore) Reset(ctx context.Context, to eventstore.Identity) error {
	var created *time.Time
	if !to.Created.IsZero() {
		created = &to.Created
	}
	err := pgx.BeginFunc(ctx, u.s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, u.q.lockCheckpoint); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, u.q.truncate); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, u.q.resetCheckpoint, to.Stream, created)
		return err
	})
	if err != nil {
		return fmt.Errorf("readmodel/postgres: reset usage to %s: %w", to, err)
	}
	return nil
}

// Apply implements follow.Consumer: in one transaction, the flush's rows
// (unless its gateway run's flush sequence shows it applied already) and
// the checkpoint. A flush that does not decode is skipped.
func (u *usageStore) Apply(ctx context.Context, rec eventstore.Record) error {
	if rec.Sequence > math.MaxInt64 {
		return fmt.Errorf("readmodel/postgres: usage sequence %d does not fit a bigint", rec.Sequence)
	}
	f, ferr := readmodel.DecodeFlush(rec)
	if ferr != nil && !errors.Is(ferr, readmodel.ErrInvalidUsage) {
		return ferr
	}
	err := pgx.BeginFunc(ctx, u.s.pool, func(tx pgx.Tx) error {
		var checkpoint int64
		if err := tx.QueryRow(ctx, u.q.lockCheckpoint).Scan(&checkpoint); err != nil {
			return fmt.Errorf("lock usage checkpoint: %w", err)
		}
		if rec.Sequence <= uint64(checkpoint) {
			return nil
		}
		b := &pgx.Batch{}
		if f != nil && f.GetSequence() <= math.MaxInt64 {
			var last int64
			err := tx.QueryRow(ctx, u.q.sender, readmodel.Sender(f)).Scan(&last)
			if err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("usage sender: %w", err)
			}
			if f.GetSequence() > uint64(last) {
				b.Queue(u.q.setSender, readmodel.Sender(f), int64(f.GetSequence()))
				for _, r := range f.GetRows() {
					c := readmodel.CountsOf(r.GetCounts())
					b.Queue(u.q.addBucket, r.GetProject(), r.GetDeployment(), r.GetKey(), r.GetMinute(),
						int64(c.OK), int64(c.ClientErrors), int64(c.ServerErrors), int64(c.Refused),
						int64(c.PromptTokens), int64(c.CompletionTokens))
					b.Queue(u.q.setLast, r.GetProject(), r.GetDeployment(), r.GetKey(), r.GetLastUsedUnixNano())
				}
			}
		}
		b.Queue(u.q.setCheckpoint, int64(rec.Sequence))
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("readmodel/postgres: apply usage sequence %d: %w", rec.Sequence, err)
	}
	return nil
}

// Usage implements readmodel.UsageStore.
func (u *usageStore) Usage(ctx context.Context, f readmodel.UsageFilter) ([]readmodel.UsageRow, error) {
	step := int64(f.Step / time.Second)
	if step <= 0 {
		return nil, fmt.Errorf("readmodel/postgres: usage step %s", f.Step)
	}
	rows, _ := u.s.pool.Query(ctx, u.q.usage, f.Project, f.Key, f.Deployment, f.Since.Unix(), f.Until.Unix(), step, f.By == readmodel.ByKey)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (readmodel.UsageRow, error) {
		var (
			r     readmodel.UsageRow
			start int64
			n     [6]int64
		)
		err := row.Scan(&start, &r.Name, &n[0], &n[1], &n[2], &n[3], &n[4], &n[5])
		r.Start = time.Unix(start, 0).UTC()
		r.Counts = readmodel.Counts{OK: uint64(n[0]), ClientErrors: uint64(n[1]), ServerErrors: uint64(n[2]), Refused: uint64(n[3]),
			PromptTokens: uint64(n[4]), CompletionTokens: uint64(n[5])}
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("readmodel/postgres: usage: %w", err)
	}
	return out, nil
}

// LastUsed implements readmodel.UsageStore.
func (u *usageStore) LastUsed(ctx context.Context, project string) ([]readmodel.LastUse, error) {
	rows, _ := u.s.pool.Query(ctx, u.q.lastUsed, project)
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (readmodel.LastUse, error) {
		var (
			l  readmodel.LastUse
			ns int64
		)
		err := row.Scan(&l.Deployment, &l.Key, &ns)
		l.At = time.Unix(0, ns).UTC()
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("readmodel/postgres: last used: %w", err)
	}
	return out, nil
}
