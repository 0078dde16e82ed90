package natsauth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natsauth"
	"github.com/infergate/infergate/services/internal/natsembed"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/snapshots"
)

// The identities every role test uses.
var (
	controlPlane = natsauth.Identity{Role: natsauth.ControlPlane}
	auditor      = natsauth.Identity{Role: natsauth.Audit}
	gateway1     = natsauth.GatewayIdentity("eu", "gw-1")
	gateway2     = natsauth.GatewayIdentity("eu", "gw-2")
)

// client is one connection as one identity, with the permission
// violations the server reported on it.
type client struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	violations chan error
}

// connector connects as an identity to the server under test.
type connector func(t *testing.T, id natsauth.Identity) *client

// connectTo returns a connector for url, with seeds in dir.
func connectTo(url, dir string, extra ...nats.Option) connector {
	return func(t *testing.T, id natsauth.Identity) *client {
		t.Helper()
		opts, err := id.ClientOptions(id.SeedFile(dir), "")
		if err != nil {
			t.Fatal(err)
		}
		c := &client{violations: make(chan error, 16)}
		opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) {
				select {
				case c.violations <- err:
				default:
				}
			}
		}))
		c.nc, err = nats.Connect(url, append(opts, extra...)...)
		if err != nil {
			t.Fatalf("connect as %s: %v", id.Name(), err)
		}
		t.Cleanup(c.nc.Close)
		if c.js, err = jetstream.New(c.nc); err != nil {
			t.Fatal(err)
		}
		return c
	}
}

// denied runs op, which must fail, and waits for the server's permission
// violation on a subject starting with subject.
func (c *client) denied(t *testing.T, subject string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 1500*time.Millisecond)
	defer cancel()
	if err := op(ctx); err == nil {
		t.Errorf("%s: allowed, want a permissions violation", subject)
		return
	}
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-c.violations:
			if strings.Contains(err.Error(), `"`+subject) {
				return
			}
		case <-timeout:
			t.Errorf("%s: failed, but the server reported no permissions violation for it", subject)
			return
		}
	}
}

// deniedPublish publishes on subject with core NATS, which has no reply
// to fail: the server's violation is the only answer.
func (c *client) deniedPublish(t *testing.T, subject string) {
	t.Helper()
	c.denied(t, subject, func(ctx context.Context) error {
		if err := c.nc.Publish(subject, []byte("{}")); err != nil {
			return err
		}
		if err := c.nc.FlushWithContext(ctx); err != nil {
			return err
		}
		return errors.New("published; waiting for the server's verdict")
	})
}

// noViolations fails if the server reported a violation on c.
func (c *client) noViolations(t *testing.T) {
	t.Helper()
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.violations:
		t.Errorf("unexpected: %v", err)
	default:
	}
}

func keyEvent(name string) []*eventv1.Event {
	return []*eventv1.Event{{
		Id: "e-" + name, Time: timestamppb.Now(), Actor: "test", Project: "p",
		Aggregate: &eventv1.Aggregate{Type: eventv1.AggregateType_AGGREGATE_TYPE_KEY, Name: name},
		Payload: &eventv1.Event_KeyCreated{KeyCreated: &eventv1.KeyCreated{
			KeyId: "id-" + name, Name: name, SecretSha256: make([]byte, 32),
		}},
	}}
}

var keyAgg = eventstore.Aggregate{Project: "p", Type: eventstore.TypeKey, Name: "alpha"}

// checkRoles is the conformance suite of the identities: run against
// every server configuration that defines them (the dev stack's embedded
// server, deploy/nats). It needs control-plane, audit, gateway1 and
// gateway2.
func checkRoles(t *testing.T, connect connector) {
	ctx := t.Context()

	// The control plane creates the stream, appends, saves a snapshot and
	// hears receipts.
	cp := connect(t, controlPlane)
	if err := eventstore.EnsureStream(ctx, cp.js, eventstore.Config{}); err != nil {
		t.Fatalf("control plane: create the event stream: %v", err)
	}
	events, err := eventstore.Open(ctx, cp.js, eventstore.Config{})
	if err != nil {
		t.Fatalf("control plane: open the event store: %v", err)
	}
	// One atomic batch over two aggregates (a key created with its link).
	if _, err := events.AppendAtomic(ctx, "atomic-1", []eventstore.Change{
		{Aggregate: eventstore.Aggregate{Project: "p", Type: eventstore.TypeKey, Name: "batched"}, Events: keyEvent("batched")},
		{Aggregate: eventstore.Aggregate{Project: "p", Type: eventstore.TypeDeployment, Name: "batched"}, Events: keyEvent("batched")},
	}); err != nil {
		t.Fatalf("control plane: append an atomic batch: %v", err)
	}
	res, err := events.Append(ctx, keyAgg, 0, keyEvent("alpha"))
	if err != nil {
		t.Fatalf("control plane: append: %v", err)
	}
	bucket, err := snapshots.Open(ctx, cp.js, snapshots.Config{})
	if err != nil {
		t.Fatalf("control plane: open the snapshot bucket: %v", err)
	}
	state, err := events.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := authmap.New()
	m.Apply(res.Sequence, keyEvent("alpha"))
	if _, err := bucket.Save(ctx, m, state); err != nil {
		t.Fatalf("control plane: save a snapshot: %v", err)
	}
	if _, err := bucket.Save(ctx, m, state); err != nil {
		t.Fatalf("control plane: replace a snapshot: %v", err)
	}
	tracker, err := receipts.NewTracker(cp.nc, events.Identity)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tracker.Close)
	// The usage stream has the same owner.
	if err := eventstore.EnsureStream(ctx, cp.js, eventstore.UsageConfig()); err != nil {
		t.Fatalf("control plane: create the usage stream: %v", err)
	}
	usageStore, err := eventstore.Open(ctx, cp.js, eventstore.UsageConfig())
	if err != nil {
		t.Fatalf("control plane: open the usage stream: %v", err)
	}
	cp.noViolations(t)

	t.Run("roles", func(t *testing.T) {
		checkGateway(t, connect, tracker, state, res.Sequence)
		checkAudit(t, connect, res.Sequence)
	})

	// The usage stream holds what gateway1 published on its own subject
	// and nothing else, and the control plane (the usage projection)
	// reads it; it may not publish usage itself.
	checkUsageRead(t, usageStore, gateway1.UsageSubject())
	cp.noViolations(t)
	cp.deniedPublish(t, gateway1.UsageSubject())

	// After all that, the stream holds what the control plane appended and
	// nothing else.
	if last, err := events.LastSequence(ctx); err != nil || last != res.Sequence {
		t.Errorf("stream last sequence %d (%v), want %d", last, err, res.Sequence)
	}
}

func checkGateway(t *testing.T, connect connector, tracker *receipts.Tracker, state eventstore.StreamState, seq uint64) {
	ctx := t.Context()
	t.Run("gateway reads", func(t *testing.T) {
		t.Parallel()
		gw := connect(t, gateway1)
		store, err := eventstore.Open(ctx, gw.js, eventstore.Config{})
		if err != nil {
			t.Fatalf("bind to the stream: %v", err)
		}
		readStream(t, store, seq)
		snaps, err := snapshots.Open(ctx, gw.js, snapshots.Config{ReadOnly: true})
		if err != nil {
			t.Fatalf("open the snapshot bucket to read: %v", err)
		}
		if info, err := snaps.Restore(ctx, authmap.New(), state); err != nil || info.Sequence != seq {
			t.Errorf("restore a snapshot: %+v, %v", info, err)
		}
		rep, err := receipts.NewReporter(gw.nc, gateway1.ID, gateway1.Region, 50*time.Millisecond, func() receipts.State {
			return receipts.State{Stream: state.Identity(), Sequence: seq, Ready: true}
		}, nil)
		if err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { _ = rep.Run(rctx) }()
		// Its usage counts go to the usage stream on its own subject,
		// acknowledged by JetStream.
		if _, err := gw.js.Publish(ctx, gateway1.UsageSubject(), []byte("flush"), jetstream.WithMsgID("eu.gw-1.boot.1"),
			jetstream.WithExpectStream(natsauth.UsageStream)); err != nil {
			t.Errorf("publish usage: %v", err)
		}
		waitFor(t, "the control plane hears gw-1's receipt", func() bool {
			for _, g := range tracker.Gateways() {
				if g.ID == gateway1.ID && g.Sequence == seq {
					return true
				}
			}
			return false
		})
		gw.noViolations(t)
	})

	denied := []struct {
		subject string
		op      func(ctx context.Context, gw *client) error
	}{
		{"infergate.events.p.key.forged", func(ctx context.Context, gw *client) error {
			store, err := eventstore.Open(ctx, gw.js, eventstore.Config{})
			if err != nil {
				return nil // not the check this is
			}
			_, err = store.Append(ctx, eventstore.Aggregate{Project: "p", Type: eventstore.TypeKey, Name: "forged"}, 0, keyEvent("forged"))
			return err
		}},
		{"infergate.events.p.key.alpha", publish("infergate.events.p.key.alpha")},
		{"infergate.events.p.key.forged-batch", func(ctx context.Context, gw *client) error {
			store, err := eventstore.Open(ctx, gw.js, eventstore.Config{})
			if err != nil {
				return nil // not the check this is
			}
			_, err = store.AppendAtomic(ctx, "forged-batch", []eventstore.Change{
				{Aggregate: eventstore.Aggregate{Project: "p", Type: eventstore.TypeKey, Name: "forged-batch"}, Events: keyEvent("forged-batch")},
				{Aggregate: eventstore.Aggregate{Project: "p", Type: eventstore.TypeDeployment, Name: "forged-batch"}, Events: keyEvent("forged-batch")},
			})
			return err
		}},
		{"$JS.API.STREAM.DELETE." + natsauth.EventStream, func(ctx context.Context, gw *client) error {
			return gw.js.DeleteStream(ctx, natsauth.EventStream)
		}},
		{"$JS.API.STREAM.UPDATE." + natsauth.EventStream, func(ctx context.Context, gw *client) error {
			_, err := gw.js.UpdateStream(ctx, jetstream.StreamConfig{Name: natsauth.EventStream, Subjects: []string{"infergate.events.>"}, MaxMsgs: 1})
			return err
		}},
		{"$JS.API.STREAM.PURGE." + natsauth.EventStream, func(ctx context.Context, gw *client) error {
			s, err := gw.js.Stream(ctx, natsauth.EventStream)
			if err != nil {
				return nil // no stream info: not the check this is
			}
			return s.Purge(ctx)
		}},
		{"$O." + snapshots.DefaultBucket, func(ctx context.Context, gw *client) error {
			// A writable open binds to the existing bucket (stream info is
			// allowed); the write itself is what is denied.
			snaps, err := snapshots.Open(ctx, gw.js, snapshots.Config{})
			if err != nil {
				return err
			}
			_, err = snaps.Save(ctx, authmap.New(), state)
			return err
		}},
		{"$JS.API.CONSUMER.CREATE.OBJ_" + snapshots.DefaultBucket, func(ctx context.Context, gw *client) error {
			// A consumer's deliver subject is not checked against its
			// creator's permissions: none on the bucket for gateways.
			_, err := gw.js.OrderedConsumer(ctx, "OBJ_"+snapshots.DefaultBucket, jetstream.OrderedConsumerConfig{})
			return err
		}},
		{"infergate.gateways.eu.gw-2", publish("infergate.gateways.eu.gw-2")}, // another gateway's receipts
		{"infergate.usage.eu.gw-2", publish("infergate.usage.eu.gw-2")},       // another gateway's usage
		{"$JS.API.STREAM.UPDATE." + natsauth.UsageStream, func(ctx context.Context, gw *client) error {
			_, err := gw.js.UpdateStream(ctx, jetstream.StreamConfig{Name: natsauth.UsageStream, Subjects: []string{"infergate.usage.>"}, MaxMsgs: 1})
			return err
		}},
		{"$JS.API.CONSUMER.CREATE." + natsauth.UsageStream, func(ctx context.Context, gw *client) error {
			// Gateways publish usage; they do not read anyone's.
			_, err := gw.js.OrderedConsumer(ctx, natsauth.UsageStream, jetstream.OrderedConsumerConfig{})
			return err
		}},
	}
	for _, d := range denied {
		t.Run("gateway denied "+d.subject, func(t *testing.T) {
			t.Parallel()
			gw := connect(t, gateway1)
			gw.denied(t, d.subject, func(ctx context.Context) error { return d.op(ctx, gw) })
		})
	}

	t.Run("gateway subscribes to its own inbox only", func(t *testing.T) {
		t.Parallel()
		gw := connect(t, gateway2)
		sub, err := gw.nc.SubscribeSync(controlPlane.InboxPrefix() + ".>")
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
		gw.denied(t, controlPlane.InboxPrefix(), func(ctx context.Context) error {
			if err := gw.nc.FlushWithContext(ctx); err != nil {
				return err
			}
			// The violation arrives after the flush's pong; the subscription
			// reports it.
			_, err := sub.NextMsgWithContext(ctx)
			return err
		})
	})

}

func checkAudit(t *testing.T, connect connector, seq uint64) {
	ctx := t.Context()
	t.Run("audit reads only", func(t *testing.T) {
		t.Parallel()
		au := connect(t, auditor)
		store, err := eventstore.Open(ctx, au.js, eventstore.Config{})
		if err != nil {
			t.Fatalf("bind to the stream: %v", err)
		}
		readStream(t, store, seq)
		au.noViolations(t)
		au.denied(t, "infergate.events.p.key.forged", func(ctx context.Context) error {
			_, err := store.Append(ctx, eventstore.Aggregate{Project: "p", Type: eventstore.TypeKey, Name: "forged"}, 0, keyEvent("forged"))
			return err
		})
		au.denied(t, "$JS.API.STREAM.UPDATE."+natsauth.EventStream, func(ctx context.Context) error {
			_, err := eventstore.UpdateStream(ctx, au.js, eventstore.Config{})
			return err
		})
		au.denied(t, "$JS.API.STREAM.DELETE."+natsauth.EventStream, func(ctx context.Context) error {
			return au.js.DeleteStream(ctx, natsauth.EventStream)
		})
		au.deniedPublish(t, "infergate.gateways.eu.gw-1")
		au.deniedPublish(t, gateway1.UsageSubject())
		au.denied(t, "$JS.API.CONSUMER.CREATE."+natsauth.UsageStream, func(ctx context.Context) error {
			_, err := au.js.OrderedConsumer(ctx, natsauth.UsageStream, jetstream.OrderedConsumerConfig{})
			return err
		})
	})
}

// checkUsageRead follows the usage stream as the usage projection does
// and finds exactly one message, on subject.
func checkUsageRead(t *testing.T, store *eventstore.Store, subject string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	st, err := store.State(ctx)
	if err != nil || st.LastSeq != 1 {
		t.Fatalf("usage stream: last sequence %d (%v), want 1", st.LastSeq, err)
	}
	errDone := errors.New("done")
	err = store.Follow(ctx, 1, func(r eventstore.Record) error {
		if r.Subject != subject || string(r.Data) != "flush" {
			t.Errorf("usage record on %s: %q", r.Subject, r.Data)
		}
		return errDone
	})
	if !errors.Is(err, errDone) {
		t.Errorf("follow the usage stream: %v", err)
	}
}

// publish is an operation that publishes on subject with core NATS.
func publish(subject string) func(context.Context, *client) error {
	return func(ctx context.Context, c *client) error {
		if err := c.nc.Publish(subject, []byte("{}")); err != nil {
			return err
		}
		if err := c.nc.FlushWithContext(ctx); err != nil {
			return err
		}
		return errors.New("published; waiting for the server's verdict")
	}
}

// readStream follows the stream from the start to seq and loads an
// aggregate: what gateways and audit do.
func readStream(t *testing.T, store *eventstore.Store, seq uint64) {
	t.Helper()
	// As long as waitFor waits: under make test (every package at once,
	// with -race, on 2 cores) 10 s was once not enough to follow a few
	// records.
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	// Followers hear the stream's advisories (the caller checks that the
	// subscription drew no violation).
	stop, err := store.OnStreamChange(func() {})
	if err != nil {
		t.Fatalf("watch the stream's advisories: %v", err)
	}
	defer stop()
	errDone := errors.New("done")
	err = store.Follow(ctx, 1, func(r eventstore.Record) error {
		if r.Sequence >= seq {
			return errDone
		}
		return nil
	})
	if !errors.Is(err, errDone) {
		t.Errorf("follow the stream: %v", err)
	}
	if recs, _, err := store.LoadAfter(ctx, keyAgg, 0); err != nil || len(recs) != 1 {
		t.Errorf("load an aggregate: %d records, %v", len(recs), err)
	}
	if _, err := store.State(ctx); err != nil {
		t.Errorf("stream state: %v", err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// users makes seeds for the identities in dir and returns their users.
func users(t *testing.T, dir string, ids ...natsauth.Identity) []*server.NkeyUser {
	t.Helper()
	out, err := natsauth.Users(dir, ids...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRolesOnEmbeddedServer runs the suite against the embedded server as
// the dev stack configures it.
func TestRolesOnEmbeddedServer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := natsembed.Start(natsembed.Config{
		StoreDir: t.TempDir(),
		Users:    users(t, dir, controlPlane, auditor, gateway1, gateway2),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Shutdown)

	// Without credentials, nothing.
	if nc, err := nats.Connect(s.ClientURL()); err == nil {
		nc.Close()
		t.Error("connected without credentials")
	}
	checkRoles(t, connectTo(s.ClientURL(), dir))
}
