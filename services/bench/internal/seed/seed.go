// Package seed writes large event streams fast, for the cold-start and load
// benchmarks: keys created, deployments created with their links, and
// deployments marked DEPLOYED — the same events, built by the same domain
// code (services/internal/aggregate), with the same headers (message id,
// expected stream, expected last subject sequence) as the services append,
// one command per message. Only the pacing differs: the services wait for
// each acknowledgement, the seeder keeps many publishes in flight.
package seed

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// streamName is eventstore's default stream, the one every service uses.
const streamName = "INFERGATE_EVENTS"

// Writer publishes commands' events without waiting for each
// acknowledgement.
type Writer struct {
	js      jetstream.JetStream
	store   *eventstore.Store
	project string
	failed  atomic.Int64
	lastErr atomic.Value // error
	stalls  atomic.Int64
}

// New opens (creating if need be) the event stream on nc, creates the
// usage stream if need be, and returns a writer of the project's events.
func New(ctx context.Context, nc *nats.Conn, project string) (*Writer, error) {
	w := &Writer{project: project}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		// An acknowledgement that never comes fails its publish, so
		// waiting for the outstanding ones (Publish) always ends.
		jetstream.WithPublishAsyncTimeout(2*time.Minute),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) {
			w.failed.Add(1)
			w.lastErr.Store(err)
		}),
	)
	if err != nil {
		return nil, err
	}
	if err := eventstore.EnsureStream(ctx, js, eventstore.Config{}); err != nil {
		return nil, err
	}
	// The usage stream too, as `infergate dev` makes it: the gateways
	// under test publish their counts as in production (without it every
	// flush fails and is kept, which costs another amount of work).
	if err := eventstore.EnsureStream(ctx, js, eventstore.UsageConfig()); err != nil {
		return nil, err
	}
	if w.store, err = eventstore.Open(ctx, js, eventstore.Config{}); err != nil {
		return nil, err
	}
	w.js = js
	return w, nil
}

// Store is the event store the writer appends to.
func (w *Writer) Store() *eventstore.Store { return w.store }

// Meta is the command metadata of the writer's events.
func (w *Writer) Meta() aggregate.Meta {
	return aggregate.Meta{Actor: "bench-seed", Project: w.project, Now: time.Now().UTC(), NewID: uuid.NewString}
}

// Publish appends one command's events to agg as one message, expecting the
// aggregate at version expected (0: new), and returns without waiting.
func (w *Writer) Publish(typ, name string, expected uint64, events []*eventv1.Event) (jetstream.PubAckFuture, error) {
	data, err := proto.Marshal(&eventv1.Batch{Events: events})
	if err != nil {
		return nil, err
	}
	subject := w.store.Subject(eventstore.Aggregate{Project: w.project, Type: typ, Name: name})
	for {
		f, err := w.js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: data},
			jetstream.WithMsgID(events[0].GetId()),
			jetstream.WithExpectStream(streamName),
			jetstream.WithExpectLastSequencePerSubject(expected),
			jetstream.WithStallWait(stallWait),
		)
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return f, err
		}
		// The server acknowledges slower than the seeder publishes (a
		// busy machine, a disk that syncs): wait for the publishes in
		// flight instead of failing (issue 12: bench-coldstart stopped
		// here after a million keys), then publish this one again.
		w.stalls.Add(1)
		<-w.js.PublishAsyncComplete()
	}
}

// stallWait is how long a publish waits for a free slot among the
// MaxPending in flight before the writer waits for all of them.
const stallWait = 5 * time.Second

// Stalls counts how often a publish had to wait for the publishes in
// flight.
func (w *Writer) Stalls() int64 { return w.stalls.Load() }

// Wait blocks until every publish so far is acknowledged and reports
// whether any failed.
func (w *Writer) Wait(ctx context.Context) error {
	select {
	case <-w.js.PublishAsyncComplete():
	case <-ctx.Done():
		return ctx.Err()
	}
	if n := w.failed.Load(); n > 0 {
		err, _ := w.lastErr.Load().(error)
		return fmt.Errorf("seed: %d publishes failed, the last with: %w", n, err)
	}
	return nil
}

// Key is a key to create.
type Key struct {
	Name string
	// Secret is the key's secret; only its hash goes into the stream.
	Secret string
	// ID is filled in by CreateKeys.
	ID string
}

// KeyName is the benchmarks' name for key i.
func KeyName(i int) string { return fmt.Sprintf("key-%07d", i) }

// NewKeys makes n keys with fresh secrets (apikey.Generate).
func NewKeys(n int) ([]Key, error) {
	keys := make([]Key, n)
	for i := range keys {
		s, err := apikey.Generate()
		if err != nil {
			return nil, err
		}
		keys[i] = Key{Name: KeyName(i), Secret: s}
	}
	return keys, nil
}

// CreateKeys publishes one KeyCreated command per key and fills in the
// keys' ids. progress, if set, is called every 100,000 keys.
func (w *Writer) CreateKeys(keys []Key, progress func(done int)) error {
	for i := range keys {
		k := &keys[i]
		events, err := aggregate.Key{}.Create(w.Meta(), aggregate.NewKey{
			Name: k.Name, Hash: apikey.Sum(k.Secret), Hint: apikey.Hint(k.Secret),
		})
		if err != nil {
			return err
		}
		k.ID = events[0].GetKeyCreated().GetKeyId()
		if _, err := w.Publish(eventstore.TypeKey, k.Name, 0, events); err != nil {
			return err
		}
		if progress != nil && (i+1)%100_000 == 0 {
			progress(i + 1)
		}
	}
	return nil
}

// Deployment is a deployment to create.
type Deployment struct {
	Name        string
	UpstreamURL string
	// Keys are linked in the creating command (as CreateDeployment with
	// api_keys does).
	Keys []Key
}

// CreateDeployments publishes, per deployment, the CreateDeployment command
// (DeploymentCreated, its KeyLinked events and DeploymentAuthEnabled, one
// message), then, once those are acknowledged, the status checker's
// DEPLOYED (one message each). It returns each deployment's version.
func (w *Writer) CreateDeployments(ctx context.Context, deps []Deployment, progress func(done int)) ([]uint64, error) {
	futures := make([]jetstream.PubAckFuture, len(deps))
	states := make([]aggregate.Deployment, len(deps))
	for i, d := range deps {
		live := aggregate.LiveKeys{}
		names := make([]string, len(d.Keys))
		for j, k := range d.Keys {
			live[k.Name], names[j] = k.ID, k.Name
		}
		meta := w.Meta()
		events, err := aggregate.Deployment{}.Create(meta, aggregate.NewDeployment{
			Name: d.Name, Model: "bench-model", UpstreamURL: d.UpstreamURL, AuthEnabled: true, Keys: names,
		}, live)
		if err != nil {
			return nil, fmt.Errorf("seed: deployment %s: %w", d.Name, err)
		}
		states[i] = aggregate.DeploymentFrom(d.Name, events)
		if futures[i], err = w.Publish(eventstore.TypeDeployment, d.Name, 0, events); err != nil {
			return nil, err
		}
		if progress != nil && (i+1)%10_000 == 0 {
			progress(i + 1)
		}
	}
	versions := make([]uint64, len(deps))
	for i, d := range deps {
		ack, err := awaitAck(ctx, futures[i])
		if err != nil {
			return nil, fmt.Errorf("seed: deployment %s: %w", d.Name, err)
		}
		events, err := states[i].SetStatus(w.Meta(), eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED, "")
		if err != nil {
			return nil, err
		}
		if futures[i], err = w.Publish(eventstore.TypeDeployment, d.Name, ack.Sequence, events); err != nil {
			return nil, err
		}
	}
	for i := range deps {
		ack, err := awaitAck(ctx, futures[i])
		if err != nil {
			return nil, err
		}
		versions[i] = ack.Sequence
	}
	return versions, nil
}

// LinkKeys links keys to a deployment created by CreateDeployments (at
// version), batch keys per message — what UpdateDeploymentAuth does when a
// batch of keys is added to the set at once. It returns the new version.
func (w *Writer) LinkKeys(ctx context.Context, dep Deployment, version uint64, keys []Key, batch int) (uint64, error) {
	recs, _, err := w.store.Load(ctx, eventstore.Aggregate{Project: w.project, Type: eventstore.TypeDeployment, Name: dep.Name})
	if err != nil {
		return 0, err
	}
	d := aggregate.DeploymentFrom(dep.Name, eventstore.Events(recs))
	for start := 0; start < len(keys); start += batch {
		chunk := keys[start:min(start+batch, len(keys))]
		live := aggregate.LiveKeys{}
		var events []*eventv1.Event
		meta := w.Meta()
		for _, k := range chunk {
			live[k.Name] = k.ID
			ev, err := d.Link(meta, k.Name, live)
			if err != nil {
				return 0, err
			}
			events = append(events, ev...)
		}
		f, err := w.Publish(eventstore.TypeDeployment, dep.Name, version, events)
		if err != nil {
			return 0, err
		}
		ack, err := awaitAck(ctx, f)
		if err != nil {
			return 0, err
		}
		version = ack.Sequence
	}
	return version, nil
}

func awaitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
