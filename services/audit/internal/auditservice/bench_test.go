package auditservice

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/audit/internal/history"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/natstest"
)

// BenchmarkCheckAccess measures CheckAccess on a project whose history has
// 100,000 records: 1,000 keys, 100 deployments, and link/unlink changes.
//
//	go test -run '^$' -bench CheckAccess -benchtime 20x ./services/audit/internal/auditservice/
func BenchmarkCheckAccess(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		for _, checkpoints := range []bool{false, true} {
			b.Run(fmt.Sprintf("events=%d/checkpoints=%v", n, checkpoints), func(b *testing.B) {
				s, at := historyOf(b, n, checkpoints)
				req := connect.NewRequest(&auditv1.CheckAccessRequest{Project: "bench", Deployment: "dep-7", Key: "key-0007", At: timestamppb.New(at)})
				// Steady state: the first call waits for the index to
				// catch up with the stream, as after a restart.
				if _, err := s.CheckAccess(context.Background(), req); err != nil {
					b.Fatal(err)
				}
				b.ResetTimer()
				for b.Loop() {
					res, err := s.CheckAccess(context.Background(), req)
					if err != nil || res.Msg.GetSequence() == 0 {
						b.Fatalf("%v %v", res, err)
					}
				}
			})
		}
	}
}

func historyOf(b *testing.B, n int, checkpoints bool) (*Server, time.Time) {
	b.Helper()
	_, js := natstest.JetStream(b)
	events := natstest.EventStore(b, js)
	ev := func(typ eventv1.AggregateType, name string) *eventv1.Event {
		return &eventv1.Event{Id: uuid.NewString(), Time: timestamppb.Now(), Actor: "bench", Project: "bench",
			Aggregate: &eventv1.Aggregate{Type: typ, Name: name}}
	}
	const keys, deps = 1000, 100
	appendOne := func(agg eventstore.Aggregate, version uint64, e *eventv1.Event) uint64 {
		r, err := events.Append(context.Background(), agg, version, []*eventv1.Event{e})
		if err != nil {
			b.Fatal(err)
		}
		return r.Sequence
	}
	for i := range keys {
		name := fmt.Sprintf("key-%04d", i)
		e := ev(eventv1.AggregateType_AGGREGATE_TYPE_KEY, name)
		e.Payload = &eventv1.Event_KeyCreated{KeyCreated: &eventv1.KeyCreated{KeyId: "kid-" + name, Name: name, SecretSha256: make([]byte, 32)}}
		e.GetKeyCreated().SecretSha256[0], e.GetKeyCreated().SecretSha256[1] = byte(i), byte(i>>8)
		appendOne(eventstore.Aggregate{Project: "bench", Type: eventstore.TypeKey, Name: name}, 0, e)
	}
	// Each deployment gets its own writer; they append concurrently.
	perDep := (n - keys) / deps
	var wg sync.WaitGroup
	for d := range deps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("dep-%d", d)
			agg := eventstore.Aggregate{Project: "bench", Type: eventstore.TypeDeployment, Name: name}
			id := "did-" + name
			e := ev(eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, name)
			e.Payload = &eventv1.Event_DeploymentCreated{DeploymentCreated: &eventv1.DeploymentCreated{DeploymentId: id, Name: name, Model: "m", UpstreamUrl: "http://up"}}
			v := appendOne(agg, 0, e)
			for i := 1; i < perDep; i++ {
				key := fmt.Sprintf("key-%04d", (i/2)%keys)
				e := ev(eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, name)
				if i%2 == 1 {
					e.Payload = &eventv1.Event_KeyLinked{KeyLinked: &eventv1.KeyLinked{DeploymentId: id, KeyId: "kid-" + key, KeyName: key}}
				} else {
					e.Payload = &eventv1.Event_KeyUnlinked{KeyUnlinked: &eventv1.KeyUnlinked{DeploymentId: id, KeyId: "kid-" + key, KeyName: key}}
				}
				v = appendOne(agg, v, e)
			}
		}()
	}
	wg.Wait()
	cfg := Config{Events: events}
	if checkpoints {
		h, err := history.New(history.Config{Events: events})
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { _ = h.Run(ctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done })
		cfg.History = h
	}
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	// The moment asked about is mid-history: a checkpoint must be found,
	// then records replayed after it.
	return s, time.Now()
}
