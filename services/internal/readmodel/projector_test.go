package readmodel_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
	"github.com/infergate/infergate/services/internal/pgtest"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/readmodel/postgres"
)

// stream appends real events to a real (embedded) JetStream event store,
// keeping each aggregate's version for optimistic concurrency.
type stream struct {
	t        *testing.T
	js       jetstream.JetStream
	events   *eventstore.Store
	versions map[eventstore.Aggregate]uint64
}

func newStream(t *testing.T) *stream {
	t.Helper()
	_, js := natstest.JetStream(t)
	events := natstest.EventStore(t, js)
	return &stream{t: t, js: js, events: events, versions: make(map[eventstore.Aggregate]uint64)}
}

// append stores the payloads as one record on the aggregate and returns
// its sequence.
func (s *stream) append(project, typ, name string, payloads ...func(*eventv1.Event)) uint64 {
	s.t.Helper()
	agg := eventstore.Aggregate{Project: project, Type: typ, Name: name}
	aggType := eventv1.AggregateType_AGGREGATE_TYPE_KEY
	if typ == eventstore.TypeDeployment {
		aggType = eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT
	}
	var evs []*eventv1.Event
	for _, set := range payloads {
		e := &eventv1.Event{
			Id:        uuid.NewString(),
			Time:      timestamppb.Now(),
			Actor:     "test",
			Project:   project,
			Aggregate: &eventv1.Aggregate{Type: aggType, Name: name},
		}
		set(e)
		evs = append(evs, e)
	}
	res, err := s.events.Append(s.t.Context(), agg, s.versions[agg], evs)
	if err != nil {
		s.t.Fatalf("Append to %s: %v", agg, err)
	}
	s.versions[agg] = res.Sequence
	return res.Sequence
}

func (s *stream) key(project, name string, payloads ...func(*eventv1.Event)) uint64 {
	s.t.Helper()
	return s.append(project, eventstore.TypeKey, name, payloads...)
}

func (s *stream) deployment(project, name string, payloads ...func(*eventv1.Event)) uint64 {
	s.t.Helper()
	return s.append(project, eventstore.TypeDeployment, name, payloads...)
}

func keyCreated(id, name, desc string) func(*eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_KeyCreated{KeyCreated: &eventv1.KeyCreated{
			KeyId: id, Name: name, Description: desc, Hint: "ig_…" + id, SecretSha256: make([]byte, 32),
		}}
	}
}

func keyDeleted(id string) func(*eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_KeyDeleted{KeyDeleted: &eventv1.KeyDeleted{KeyId: id}}
	}
}

func deploymentCreated(id, name string) func(*eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_DeploymentCreated{DeploymentCreated: &eventv1.DeploymentCreated{
			DeploymentId: id, Name: name, Model: "demo", UpstreamUrl: "http://127.0.0.1:9/v1", Regions: []string{"local"},
		}}
	}
}

func deployed(id string) func(*eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_DeploymentStatusChanged{DeploymentStatusChanged: &eventv1.DeploymentStatusChanged{
			DeploymentId: id, Status: eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED,
		}}
	}
}

func authEnabled(id string) func(*eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_DeploymentAuthEnabled{DeploymentAuthEnabled: &eventv1.DeploymentAuthEnabled{DeploymentId: id}}
	}
}

func linked(depID, keyID, keyName string) func(*eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_KeyLinked{KeyLinked: &eventv1.KeyLinked{DeploymentId: depID, KeyId: keyID, KeyName: keyName}}
	}
}

func unlinked(depID, keyID, keyName string) func(*eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_KeyUnlinked{KeyUnlinked: &eventv1.KeyUnlinked{DeploymentId: depID, KeyId: keyID, KeyName: keyName}}
	}
}

func deploymentDeleted(id string) func(*eventv1.Event) {
	return func(e *eventv1.Event) {
		e.Payload = &eventv1.Event_DeploymentDeleted{DeploymentDeleted: &eventv1.DeploymentDeleted{DeploymentId: id}}
	}
}

// logs is a slog.Handler that hands every record to a channel, so a test
// can wait for one.
type logs chan slog.Record

func (l logs) Enabled(context.Context, slog.Level) bool { return true }
func (l logs) Handle(_ context.Context, r slog.Record) error {
	select {
	case l <- r:
	default: // a test that does not read them must not block the projector
	}
	return nil
}
func (l logs) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l logs) WithGroup(string) slog.Handler      { return l }

// waitLog returns the next record logged with msg, failing the test if none
// comes in time.
func waitLog(t *testing.T, l logs, msg string) slog.Record {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case r := <-l:
			if r.Message == msg {
				return r
			}
		case <-timeout:
			t.Fatalf("nothing logged %q in 10 s", msg)
		}
	}
}

func attr(r slog.Record, name string) slog.Value {
	var v slog.Value
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == name {
			v = a.Value
			return false
		}
		return true
	})
	return v
}

// running is a Projector running in the background.
type running struct {
	*readmodel.Projector
	cancel context.CancelFunc
	done   chan error
}

func startProjector(t *testing.T, events *eventstore.Store, store readmodel.Store, log *slog.Logger) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{Projector: readmodel.NewProjector(events, store, log), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it to return; it may be called again.
func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err, ok := <-r.done; ok {
		close(r.done)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v; want context.Canceled", err)
		}
	}
}

func waitCaughtUp(t *testing.T, p *running) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := p.WaitCaughtUp(ctx); err != nil {
		t.Fatalf("WaitCaughtUp: %v", err)
	}
}

func waitFor(t *testing.T, p *running, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, seq); err != nil {
		t.Fatalf("WaitFor(%d): %v", seq, err)
	}
}

func openPostgres(t *testing.T, schema string) *postgres.Store {
	t.Helper()
	s, err := postgres.Open(t.Context(), postgres.Config{URL: pgtest.URL(t), Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestProjector(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"memory", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var store readmodel.Store = readmodel.NewMemory()
			if kind == "postgres" {
				store = openPostgres(t, pgtest.Schema(t))
			}
			s := newStream(t)
			ctx := t.Context()

			// History from before the projector starts.
			s.key("team-a", "ci-runner", keyCreated("k1", "ci-runner", "runs CI"))
			s.key("team-a", "notebook", keyCreated("k2", "notebook", ""))
			s.deployment("team-a", "chat", deploymentCreated("d1", "chat"), authEnabled("d1"),
				linked("d1", "k1", "ci-runner"), linked("d1", "k2", "notebook"))
			s.deployment("team-a", "chat", deployed("d1"))

			p := startProjector(t, s.events, store, nil)
			waitCaughtUp(t, p)
			d, err := store.GetDeployment(ctx, "team-a", "chat")
			if err != nil {
				t.Fatal(err)
			}
			if !d.AuthEnabled || d.Status != readmodel.StatusDeployed || !reflect.DeepEqual(d.APIKeys, []string{"ci-runner", "notebook"}) {
				t.Fatalf("after catching up, chat = %+v; want auth on, DEPLOYED, keys ci-runner and notebook", d)
			}

			// Live changes, as an RPC would wait for them after appending.
			seq := s.deployment("team-a", "chat", unlinked("d1", "k1", "ci-runner"))
			waitFor(t, p, seq)
			if got := p.Applied(); got < seq {
				t.Errorf("Applied() = %d after WaitFor(%d)", got, seq)
			}
			d, err = store.GetDeployment(ctx, "team-a", "chat")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(d.APIKeys, []string{"notebook"}) {
				t.Errorf("after unlinking ci-runner, chat's keys = %q; want [notebook]", d.APIKeys)
			}
			seq = s.key("team-a", "notebook", keyDeleted("k2"))
			waitFor(t, p, seq)
			if _, err := store.GetKey(ctx, "team-a", "notebook"); !errors.Is(err, readmodel.ErrNotFound) {
				t.Errorf("GetKey(notebook) after its delete: err = %v; want ErrNotFound", err)
			}
			if got, err := store.Checkpoint(ctx); err != nil || got.Sequence != seq {
				t.Errorf("Checkpoint() = %+v, %v; want sequence %d", got, err, seq)
			}

			// A sequence nobody appended is never reached.
			short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
			defer cancel()
			if err := p.WaitFor(short, seq+1); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("WaitFor(a future sequence) = %v; want DeadlineExceeded", err)
			}
		})
	}
}

func TestProjectorRestartResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	schema := pgtest.Schema(t)
	s := newStream(t)

	s.key("team-a", "ci-runner", keyCreated("k1", "ci-runner", "first"))
	s.key("team-b", "ci-runner", keyCreated("kb", "ci-runner", "other project"))
	s.deployment("team-a", "chat", deploymentCreated("d1", "chat"), linked("d1", "k1", "ci-runner"))
	s.deployment("team-b", "chat", deploymentCreated("db", "chat"), linked("db", "kb", "ci-runner"), authEnabled("db"))

	first := openPostgres(t, schema)
	p := startProjector(t, s.events, first, nil)
	waitCaughtUp(t, p)
	p.stop(t)
	stoppedAt := p.Applied()
	first.Close()

	// While no projector runs: delete and re-create a key and a
	// deployment, and link the new ones.
	s.key("team-a", "ci-runner", keyDeleted("k1"))
	s.key("team-a", "ci-runner", keyCreated("k1b", "ci-runner", "second"))
	s.deployment("team-a", "chat", deploymentDeleted("d1"))
	s.deployment("team-a", "chat", deploymentCreated("d2", "chat"), authEnabled("d2"), linked("d2", "k1b", "ci-runner"))
	s.deployment("team-a", "chat", deployed("d2"))
	s.key("team-a", "notebook", keyCreated("k2", "notebook", ""))
	s.deployment("team-a", "embed", deploymentCreated("d3", "embed"), linked("d3", "k2", "notebook"), linked("d3", "k1b", "ci-runner"))

	second := openPostgres(t, schema)
	if got, err := second.Checkpoint(ctx); err != nil || got.Sequence != stoppedAt {
		t.Fatalf("Checkpoint() after reopening = %+v, %v; want sequence %d", got, err, stoppedAt)
	}
	seen := make(logs, 100)
	p2 := startProjector(t, s.events, second, slog.New(seen))
	if from := attr(waitLog(t, seen, "following the event stream"), "from").Uint64(); from != stoppedAt+1 {
		t.Errorf("the restarted projector followed from %d; want %d (checkpoint + 1)", from, stoppedAt+1)
	}
	waitCaughtUp(t, p2)

	replay := readmodel.NewMemory()
	waitCaughtUp(t, startProjector(t, s.events, replay, nil))

	for _, project := range []string{"team-a", "team-b"} {
		wantKeys, err := replay.ListKeys(ctx, project, readmodel.Page{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		gotKeys, err := second.ListKeys(ctx, project, readmodel.Page{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotKeys, wantKeys) {
			t.Errorf("%s keys after restart:\n%+v\nwant (full replay):\n%+v", project, gotKeys, wantKeys)
		}
		wantDeps, err := replay.ListDeployments(ctx, project, readmodel.Page{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		gotDeps, err := second.ListDeployments(ctx, project, readmodel.Page{Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(gotDeps, wantDeps) {
			t.Errorf("%s deployments after restart:\n%+v\nwant (full replay):\n%+v", project, gotDeps, wantDeps)
		}
	}
	// A spot check that the replay itself is what a user expects.
	d, err := replay.GetDeployment(ctx, "team-a", "chat")
	if err != nil {
		t.Fatal(err)
	}
	if d.ID != "d2" || !d.AuthEnabled || d.Status != readmodel.StatusDeployed || !reflect.DeepEqual(d.APIKeys, []string{"ci-runner"}) {
		t.Errorf("team-a/chat = %+v; want d2, auth on, DEPLOYED, keys [ci-runner]", d)
	}
	k, err := replay.GetKey(ctx, "team-a", "ci-runner")
	if err != nil {
		t.Fatal(err)
	}
	if k.ID != "k1b" || !reflect.DeepEqual(k.DeploymentNames, []string{"chat", "embed"}) {
		t.Errorf("team-a/ci-runner = %+v; want k1b linked to chat and embed", k)
	}
	gotCP, _ := second.Checkpoint(ctx)
	wantCP, _ := replay.Checkpoint(ctx)
	if gotCP.Sequence != wantCP.Sequence || !gotCP.Stream.Equal(wantCP.Stream) {
		t.Errorf("checkpoint after restart = %+v; full replay = %+v", gotCP, wantCP)
	}
}

// TestProjectorRetries breaks the database under a running projector (its
// keys table disappears) and mends it: the projector logs, retries, and
// applies the record once the table is back.
func TestProjectorRetries(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	schema := pgtest.Schema(t)
	store := openPostgres(t, schema)
	s := newStream(t)
	seen := make(logs, 100)
	p := startProjector(t, s.events, store, slog.New(seen))
	waitCaughtUp(t, p)

	conn, err := pgx.Connect(ctx, pgtest.URL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	keys := pgx.Identifier{schema, "keys"}.Sanitize()
	if _, err := conn.Exec(ctx, "ALTER TABLE "+keys+" RENAME TO keys_away"); err != nil {
		t.Fatal(err)
	}
	seq := s.key("team-a", "ci-runner", keyCreated("k1", "ci-runner", ""))
	waitLog(t, seen, "following the event stream failed; retrying with backoff")
	if got := p.Applied(); got >= seq {
		t.Fatalf("Applied() = %d while the table is gone; want < %d", got, seq)
	}
	away := pgx.Identifier{schema, "keys_away"}.Sanitize()
	if _, err := conn.Exec(ctx, "ALTER TABLE "+away+" RENAME TO keys"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, seq)
	if _, err := store.GetKey(ctx, "team-a", "ci-runner"); err != nil {
		t.Errorf("GetKey after the retry: %v", err)
	}
}

// TestProjectorRebuildsOnANewStream: the stream deleted and created again
// while the read model holds its state, once under a running projector
// and once while none runs (a restarted service). Either way the read
// model ends equal to a replay of the new stream: nothing of the old one
// survives, in one transaction.
func TestProjectorRebuildsOnANewStream(t *testing.T) {
	t.Parallel()
	for _, running := range []bool{true, false} {
		t.Run(map[bool]string{true: "running", false: "restarted"}[running], func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			schema := pgtest.Schema(t)
			s := newStream(t)
			for i := range 20 {
				s.key("team-a", fmt.Sprintf("old-%02d", i), keyCreated(fmt.Sprintf("k%d", i), fmt.Sprintf("old-%02d", i), ""))
			}
			store := openPostgres(t, schema)
			p := startProjector(t, s.events, store, nil)
			waitCaughtUp(t, p)
			if !running {
				p.stop(t)
			}

			js := s.js
			if err := js.DeleteStream(ctx, "INFERGATE_EVENTS"); err != nil {
				t.Fatal(err)
			}
			s.events, s.versions = natstest.EventStore(t, js), map[eventstore.Aggregate]uint64{}
			s.key("team-a", "new-key", keyCreated("kn", "new-key", "after the loss"))
			if !running {
				p = startProjector(t, s.events, openPostgres(t, schema), nil)
			}
			waitCaughtUp(t, p)

			keys, err := store.ListKeys(ctx, "team-a", readmodel.Page{Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 1 || keys[0].Name != "new-key" {
				t.Fatalf("keys after the stream was recreated = %d (%v…); want only new-key", len(keys), keys[0].Name)
			}
			cp, err := store.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			st, err := s.events.State(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !cp.Stream.Equal(st.Identity()) || cp.Sequence != st.LastSeq {
				t.Fatalf("checkpoint %+v; want %s at %d", cp, st.Identity(), st.LastSeq)
			}
		})
	}
}
