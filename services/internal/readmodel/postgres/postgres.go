// Package postgres is the PostgreSQL read model: a readmodel.Store on
// pgx/v5 that keeps keys, deployments and their links in one schema, with
// the stream checkpoint written in the same transaction as each change.
//
// Open applies the embedded migrations (migrations/*.sql) under a
// transaction-scoped advisory lock, so many processes may start against
// the same schema at once.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
	"github.com/infergate/infergate/services/internal/readmodel"
)

// ErrInvalidConfig means Open was given a config it cannot use.
var ErrInvalidConfig = errors.New("readmodel/postgres: invalid config")

// DefaultSchema is the schema used when Config.Schema is empty.
const DefaultSchema = "infergate"

// schemaRE is what Config.Schema may be: a lower-case SQL identifier that
// needs no quoting and fits PostgreSQL's 63-byte limit.
var schemaRE = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)

// Config says where the read model lives.
type Config struct {
	// URL is the PostgreSQL connection string
	// (postgres://user@host:5432/db?sslmode=disable). Required.
	URL string
	// Schema holds the read model's tables; default "infergate". Lower-case
	// letters, digits and '_', not starting with a digit.
	Schema string
}

func (c *Config) setDefaults() {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
}

// Validate reports every problem with the config at once.
func (c *Config) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, fmt.Errorf("%w: URL is required", ErrInvalidConfig))
	}
	if !schemaRE.MatchString(c.Schema) {
		errs = append(errs, fmt.Errorf("%w: schema %q is not a lower-case identifier of at most 63 characters", ErrInvalidConfig, c.Schema))
	}
	return errors.Join(errs...)
}

// Store is the PostgreSQL read model. It is safe for concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	schema string
	q      queries
}

var _ readmodel.Store = (*Store)(nil)

// Open connects, brings the schema up to date and returns the Store. Close
// it when done.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("%w: URL: %w", ErrInvalidConfig, err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("readmodel/postgres: connect: %w", err)
	}
	s := &Store{pool: pool, schema: cfg.Schema, q: newQueries(cfg.Schema)}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes every connection. The Store cannot be used afterwards.
func (s *Store) Close() { s.pool.Close() }

// queries are the statements the Store runs, with the schema filled in.
type queries struct {
	lockCheckpoint, setCheckpoint, checkpoint, truncate, resetCheckpoint string

	deleteKeyByNameOrID, insertKey, updateKey, setExpiry, rotateKey, deleteKey string

	deleteDeploymentByNameOrID, insertDeployment, setStatus, setAuth, deleteDeployment string

	link, unlink string

	getKey, listKeys, getDeployment, listDeployments string
}

const (
	keyColumns = `k.project, k.name, k.id, k.description, k.hint, k.expires_at, k.created_at,
		k.rotated_at, k.previous_hint, k.previous_not_after,
		ARRAY(SELECT l.deployment_name FROM {{schema}}.links l
			WHERE l.project = k.project AND l.key_id = k.id ORDER BY l.deployment_name)`
	deploymentColumns = `d.project, d.name, d.id, d.model, d.upstream_url, d.regions, d.status,
		d.status_reason, d.auth_enabled, d.created_at,
		ARRAY(SELECT l.key_name FROM {{schema}}.links l
			WHERE l.project = d.project AND l.deployment_name = d.name ORDER BY l.key_name)`
)

func newQueries(schema string) queries {
	r := strings.NewReplacer("{{schema}}", pgx.Identifier{schema}.Sanitize())
	return queries{
		lockCheckpoint: r.Replace(`SELECT sequence FROM {{schema}}.checkpoint FOR UPDATE`),
		setCheckpoint:  r.Replace(`UPDATE {{schema}}.checkpoint SET sequence = $1`),
		checkpoint:     r.Replace(`SELECT sequence, stream, stream_created FROM {{schema}}.checkpoint`),
		// Links go with their keys and deployments (ON DELETE CASCADE);
		// one statement empties all three tables.
		truncate:        r.Replace(`TRUNCATE {{schema}}.links, {{schema}}.keys, {{schema}}.deployments`),
		resetCheckpoint: r.Replace(`UPDATE {{schema}}.checkpoint SET sequence = 0, stream = $1, stream_created = $2`),

		deleteKeyByNameOrID: r.Replace(`DELETE FROM {{schema}}.keys WHERE project = $1 AND (name = $2 OR id = $3)`),
		insertKey: r.Replace(`INSERT INTO {{schema}}.keys
			(project, name, id, description, hint, expires_at, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`),
		updateKey: r.Replace(`UPDATE {{schema}}.keys SET description = $3 WHERE project = $1 AND id = $2`),
		setExpiry: r.Replace(`UPDATE {{schema}}.keys SET expires_at = $3 WHERE project = $1 AND id = $2`),
		// The previous hint is the one the row held: SET reads the row as
		// it was before the update.
		rotateKey: r.Replace(`UPDATE {{schema}}.keys
			SET previous_hint = hint, hint = $3, previous_not_after = $4, rotated_at = $5
			WHERE project = $1 AND id = $2`),
		deleteKey: r.Replace(`DELETE FROM {{schema}}.keys WHERE project = $1 AND id = $2`),

		deleteDeploymentByNameOrID: r.Replace(`DELETE FROM {{schema}}.deployments WHERE project = $1 AND (name = $2 OR id = $3)`),
		insertDeployment: r.Replace(`INSERT INTO {{schema}}.deployments
			(project, name, id, model, upstream_url, regions, status, status_reason, auth_enabled, created_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, '', false, $8)`),
		setStatus:        r.Replace(`UPDATE {{schema}}.deployments SET status = $3, status_reason = $4 WHERE project = $1 AND id = $2`),
		setAuth:          r.Replace(`UPDATE {{schema}}.deployments SET auth_enabled = $3 WHERE project = $1 AND id = $2`),
		deleteDeployment: r.Replace(`DELETE FROM {{schema}}.deployments WHERE project = $1 AND id = $2`),

		// The join inserts nothing unless both the key and the deployment
		// are live in the project.
		link: r.Replace(`INSERT INTO {{schema}}.links (project, deployment_name, key_name, key_id)
			SELECT d.project, d.name, k.name, k.id
			FROM {{schema}}.deployments d JOIN {{schema}}.keys k ON k.project = d.project
			WHERE d.project = $1 AND d.id = $2 AND k.id = $3
			ON CONFLICT (project, deployment_name, key_name) DO UPDATE SET key_id = EXCLUDED.key_id`),
		unlink: r.Replace(`DELETE FROM {{schema}}.links l USING {{schema}}.deployments d
			WHERE d.project = $1 AND d.id = $2
			AND l.project = d.project AND l.deployment_name = d.name AND l.key_id = $3`),

		getKey: r.Replace(`SELECT ` + keyColumns + ` FROM {{schema}}.keys k
			WHERE k.project = $1 AND k.name = $2`),
		listKeys: r.Replace(`SELECT ` + keyColumns + ` FROM {{schema}}.keys k
			WHERE k.project = $1 AND k.name > $2 ORDER BY k.name LIMIT $3`),
		getDeployment: r.Replace(`SELECT ` + deploymentColumns + ` FROM {{schema}}.deployments d
			WHERE d.project = $1 AND d.name = $2`),
		listDeployments: r.Replace(`SELECT ` + deploymentColumns + ` FROM {{schema}}.deployments d
			WHERE d.project = $1 AND d.name > $2 ORDER BY d.name LIMIT $3`),
	}
}

// Apply implements readmodel.Store: in one transaction it locks the
// checkpoint row, skips a record it has already applied, applies every
// event in order and writes the new checkpoint.
func (s *Store) Apply(ctx context.Context, rec eventstore.Record) error {
	if rec.Sequence > math.MaxInt64 {
		return fmt.Errorf("readmodel/postgres: sequence %d does not fit a bigint", rec.Sequence)
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var checkpoint int64
		if err := tx.QueryRow(ctx, s.q.lockCheckpoint).Scan(&checkpoint); err != nil {
			return fmt.Errorf("lock checkpoint: %w", err)
		}
		if rec.Sequence <= uint64(checkpoint) {
			return nil
		}
		b := &pgx.Batch{}
		for _, ev := range rec.Events {
			s.queue(b, rec, ev)
		}
		b.Queue(s.q.setCheckpoint, int64(rec.Sequence))
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		return fmt.Errorf("readmodel/postgres: apply sequence %d: %w", rec.Sequence, err)
	}
	return nil
}

// queue adds the statements of one event to b; see docs/read-models.md for
// the rules. Events with no payload this store knows add nothing.
func (s *Store) queue(b *pgx.Batch, rec eventstore.Record, ev *eventv1.Event) {
	project := readmodel.ProjectOf(rec, ev)
	switch pl := ev.GetPayload().(type) {
	case *eventv1.Event_KeyCreated:
		e := pl.KeyCreated
		name := readmodel.NameOf(rec, ev, e.GetName())
		var expires *time.Time
		if e.GetExpiresAt() != nil {
			t := readmodel.NormalTime(e.GetExpiresAt().AsTime())
			expires = &t
		}
		// Deleting the row it replaces cascades to that key's links.
		b.Queue(s.q.deleteKeyByNameOrID, project, name, e.GetKeyId())
		b.Queue(s.q.insertKey, project, name, e.GetKeyId(), e.GetDescription(), e.GetHint(), expires, readmodel.EventTime(rec, ev))
	case *eventv1.Event_KeyUpdated:
		b.Queue(s.q.updateKey, project, pl.KeyUpdated.GetKeyId(), pl.KeyUpdated.GetDescription())
	case *eventv1.Event_KeyExpiryChanged:
		var expires *time.Time
		if x := pl.KeyExpiryChanged.GetExpiresAt(); x != nil {
			t := readmodel.NormalTime(x.AsTime())
			expires = &t
		}
		b.Queue(s.q.setExpiry, project, pl.KeyExpiryChanged.GetKeyId(), expires)
	case *eventv1.Event_KeyDeleted:
		b.Queue(s.q.deleteKey, project, pl.KeyDeleted.GetKeyId())
	case *eventv1.Event_KeyRotated:
		e := pl.KeyRotated
		b.Queue(s.q.rotateKey, project, e.GetKeyId(), e.GetHint(),
			readmodel.NormalTime(e.GetOldSecretNotAfter().AsTime()), readmodel.EventTime(rec, ev))
	case *eventv1.Event_DeploymentCreated:
		e := pl.DeploymentCreated
		name := readmodel.NameOf(rec, ev, e.GetName())
		regions := e.GetRegions()
		if regions == nil {
			regions = []string{}
		}
		// Deleting the row it replaces cascades to that deployment's links,
		// so the new deployment starts with none.
		b.Queue(s.q.deleteDeploymentByNameOrID, project, name, e.GetDeploymentId())
		b.Queue(s.q.insertDeployment, project, name, e.GetDeploymentId(), e.GetModel(), e.GetUpstreamUrl(),
			regions, readmodel.StatusDeploying, readmodel.EventTime(rec, ev))
	case *eventv1.Event_DeploymentStatusChanged:
		e := pl.DeploymentStatusChanged
		if status, ok := readmodel.StatusOf(e.GetStatus()); ok {
			b.Queue(s.q.setStatus, project, e.GetDeploymentId(), status, e.GetReason())
		}
	case *eventv1.Event_DeploymentAuthEnabled:
		b.Queue(s.q.setAuth, project, pl.DeploymentAuthEnabled.GetDeploymentId(), true)
	case *eventv1.Event_DeploymentAuthDisabled:
		b.Queue(s.q.setAuth, project, pl.DeploymentAuthDisabled.GetDeploymentId(), false)
	case *eventv1.Event_KeyLinked:
		b.Queue(s.q.link, project, pl.KeyLinked.GetDeploymentId(), pl.KeyLinked.GetKeyId())
	case *eventv1.Event_KeyUnlinked:
		b.Queue(s.q.unlink, project, pl.KeyUnlinked.GetDeploymentId(), pl.KeyUnlinked.GetKeyId())
	case *eventv1.Event_DeploymentDeleted:
		b.Queue(s.q.deleteDeployment, project, pl.DeploymentDeleted.GetDeploymentId())
	}
}

// Checkpoint implements readmodel.Store.
func (s *Store) Checkpoint(ctx context.Context) (follow.Checkpoint, error) {
	var (
		seq     int64
		stream  string
		created *time.Time
	)
	if err := s.pool.QueryRow(ctx, s.q.checkpoint).Scan(&seq, &stream, &created); err != nil {
		return follow.Checkpoint{}, fmt.Errorf("readmodel/postgres: checkpoint: %w", err)
	}
	cp := follow.Checkpoint{Stream: eventstore.Identity{Stream: stream}, Sequence: uint64(seq)}
	if created != nil {
		cp.Stream.Created = *created
	}
	return cp, nil
}

// Reset implements readmodel.Store: one transaction empties every table
// and points the checkpoint at the start of the stream's life to.
func (s *Store) Reset(ctx context.Context, to eventstore.Identity) error {
	var created *time.Time
	if !to.Created.IsZero() {
		created = &to.Created
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, s.q.lockCheckpoint); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, s.q.truncate); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, s.q.resetCheckpoint, to.Stream, created)
		return err
	})
	if err != nil {
		return fmt.Errorf("readmodel/postgres: reset to %s: %w", to, err)
	}
	return nil
}

// GetKey implements readmodel.Store.
func (s *Store) GetKey(ctx context.Context, project, name string) (readmodel.Key, error) {
	rows, _ := s.pool.Query(ctx, s.q.getKey, project, name)
	k, err := pgx.CollectExactlyOneRow(rows, scanKey)
	if errors.Is(err, pgx.ErrNoRows) {
		return readmodel.Key{}, fmt.Errorf("%w: key %s/%s", readmodel.ErrNotFound, project, name)
	}
	if err != nil {
		return readmodel.Key{}, fmt.Errorf("readmodel/postgres: get key %s/%s: %w", project, name, err)
	}
	return k, nil
}

// ListKeys implements readmodel.Store.
func (s *Store) ListKeys(ctx context.Context, project string, p readmodel.Page) ([]readmodel.Key, error) {
	if err := readmodel.CheckPage(p); err != nil {
		return nil, err
	}
	rows, _ := s.pool.Query(ctx, s.q.listKeys, project, p.After, p.Limit)
	keys, err := pgx.CollectRows(rows, scanKey)
	if err != nil {
		return nil, fmt.Errorf("readmodel/postgres: list keys of %s: %w", project, err)
	}
	return nilIfEmpty(keys), nil
}

// GetDeployment implements readmodel.Store.
func (s *Store) GetDeployment(ctx context.Context, project, name string) (readmodel.Deployment, error) {
	rows, _ := s.pool.Query(ctx, s.q.getDeployment, project, name)
	d, err := pgx.CollectExactlyOneRow(rows, scanDeployment)
	if errors.Is(err, pgx.ErrNoRows) {
		return readmodel.Deployment{}, fmt.Errorf("%w: deployment %s/%s", readmodel.ErrNotFound, project, name)
	}
	if err != nil {
		return readmodel.Deployment{}, fmt.Errorf("readmodel/postgres: get deployment %s/%s: %w", project, name, err)
	}
	return d, nil
}

// ListDeployments implements readmodel.Store.
func (s *Store) ListDeployments(ctx context.Context, project string, p readmodel.Page) ([]readmodel.Deployment, error) {
	if err := readmodel.CheckPage(p); err != nil {
		return nil, err
	}
	rows, _ := s.pool.Query(ctx, s.q.listDeployments, project, p.After, p.Limit)
	deps, err := pgx.CollectRows(rows, scanDeployment)
	if err != nil {
		return nil, fmt.Errorf("readmodel/postgres: list deployments of %s: %w", project, err)
	}
	return nilIfEmpty(deps), nil
}

func scanKey(row pgx.CollectableRow) (readmodel.Key, error) {
	var k readmodel.Key
	err := row.Scan(&k.Project, &k.Name, &k.ID, &k.Description, &k.Hint, &k.ExpiresAt, &k.CreatedAt,
		&k.RotatedAt, &k.PreviousHint, &k.PreviousNotAfter, &k.DeploymentNames)
	for _, t := range []**time.Time{&k.ExpiresAt, &k.RotatedAt, &k.PreviousNotAfter} {
		if *t != nil {
			u := (*t).UTC()
			*t = &u
		}
	}
	k.CreatedAt = k.CreatedAt.UTC()
	k.DeploymentNames = nilIfEmpty(k.DeploymentNames)
	return k, err
}

func scanDeployment(row pgx.CollectableRow) (readmodel.Deployment, error) {
	var d readmodel.Deployment
	err := row.Scan(&d.Project, &d.Name, &d.ID, &d.Model, &d.UpstreamURL, &d.Regions, &d.Status,
		&d.StatusReason, &d.AuthEnabled, &d.CreatedAt, &d.APIKeys)
	d.CreatedAt = d.CreatedAt.UTC()
	d.Regions = nilIfEmpty(d.Regions)
	d.APIKeys = nilIfEmpty(d.APIKeys)
	return d, err
}

// nilIfEmpty makes an empty list nil, as the memory store returns it.
func nilIfEmpty[T any](s []T) []T {
	if len(s) == 0 {
		return nil
	}
	return s
}
