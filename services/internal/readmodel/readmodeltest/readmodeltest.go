// Package readmodeltest is the conformance suite of readmodel.Store: every
// implementation (memory, PostgreSQL) runs it, so they answer alike.
//
//	func TestConformance(t *testing.T) {
//		readmodeltest.Run(t, func(t *testing.T) readmodel.Store { return readmodel.NewMemory() })
//	}
//
// The suite builds stream records by hand, with increasing sequences,
// applies them and checks what Get and List return.
package readmodeltest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/readmodel"
)

// Run runs the suite. newStore is called once per subtest, possibly from
// parallel subtests, and must return an empty store of its own; it
// registers any cleanup on the t it is given.
func Run(t *testing.T, newStore func(t *testing.T) readmodel.Store) {
	t.Run("Apply", func(t *testing.T) {
		t.Parallel()
		testApply(t, newStore)
	})
	tests := []struct {
		name string
		fn   func(t *testing.T, s readmodel.Store)
	}{
		{"Checkpoint", testCheckpoint},
		{"Reset", testReset},
		{"ReapplyIsNoOp", testReapply},
		{"Paging", testPaging},
		{"BadPage", testBadPage},
		{"ProjectsIsolated", testProjectsIsolated},
		{"NotFound", testNotFound},
		{"ReturnsCopies", testCopies},
		{"ConcurrentUse", testConcurrentUse},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, newStore(t))
		})
	}
}

// Projects used by the suite.
const (
	teamA = "team-a"
	teamB = "team-b"
)

// base is the time of the stream's first record; record n is n minutes
// later (see At).
var base = time.Date(2030, time.March, 4, 5, 6, 0, 0, time.UTC)

// At is the event time the suite gives every event of the record with
// sequence seq.
func At(seq uint64) time.Time { return base.Add(time.Duration(seq) * time.Minute) }

// expiry is a key expiry with nanoseconds, which stores keep to the
// microsecond.
var (
	expiry       = time.Date(2031, time.June, 7, 8, 9, 10, 123456789, time.UTC)
	expiryStored = time.Date(2031, time.June, 7, 8, 9, 10, 123456000, time.UTC)
)

// key names one life of an API key: a create, delete and create again of
// one name are two keys with different ids.
type key struct{ project, name, id string }

// dep names one life of a deployment.
type dep struct{ project, name, id string }

var (
	ciRunner   = key{teamA, "ci-runner", "key-ci-1"}
	ciRunner2  = key{teamA, "ci-runner", "key-ci-2"} // ci-runner re-created
	notebook   = key{teamA, "notebook", "key-nb-1"}
	batchJob   = key{teamA, "batch-job", "key-bj-1"}
	ciRunnerB  = key{teamB, "ci-runner", "key-ci-b"} // same name, other project
	chat       = dep{teamA, "chat", "dep-chat-1"}
	chat2      = dep{teamA, "chat", "dep-chat-2"} // chat re-created
	embed      = dep{teamA, "embed", "dep-embed-1"}
	chatB      = dep{teamB, "chat", "dep-chat-b"}
	ghostKey   = key{teamA, "ghost", "key-never-created"}
	ghostDep   = dep{teamA, "ghost", "dep-never-created"}
	secretHash = []byte("0123456789abcdef0123456789abcdef")
)

func event(project string, typ eventv1.AggregateType, name string) *eventv1.Event {
	return &eventv1.Event{
		Id:        uuid.NewString(),
		Actor:     "readmodeltest",
		Project:   project,
		Aggregate: &eventv1.Aggregate{Type: typ, Name: name},
	}
}

func (k key) event() *eventv1.Event {
	return event(k.project, eventv1.AggregateType_AGGREGATE_TYPE_KEY, k.name)
}

func (k key) hint() string { return "ig_…" + k.id[len(k.id)-4:] }

func (k key) created(desc string, expires *time.Time) *eventv1.Event {
	e := k.event()
	kc := &eventv1.KeyCreated{KeyId: k.id, Name: k.name, Description: desc, SecretSha256: secretHash, Hint: k.hint()}
	if expires != nil {
		kc.ExpiresAt = timestamppb.New(*expires)
	}
	e.Payload = &eventv1.Event_KeyCreated{KeyCreated: kc}
	return e
}

func (k key) updated(desc string) *eventv1.Event {
	e := k.event()
	e.Payload = &eventv1.Event_KeyUpdated{KeyUpdated: &eventv1.KeyUpdated{KeyId: k.id, Description: desc}}
	return e
}

// expiryChanged is a KeyExpiryChanged; nil: never expires.
func (k key) expiryChanged(expires *time.Time) *eventv1.Event {
	e := k.event()
	x := &eventv1.KeyExpiryChanged{KeyId: k.id}
	if expires != nil {
		x.ExpiresAt = timestamppb.New(*expires)
	}
	e.Payload = &eventv1.Event_KeyExpiryChanged{KeyExpiryChanged: x}
	return e
}

// rotated is a KeyRotated giving k a secret with hint; the replaced one
// stops at notAfter.
func (k key) rotated(hint string, notAfter time.Time) *eventv1.Event {
	e := k.event()
	e.Payload = &eventv1.Event_KeyRotated{KeyRotated: &eventv1.KeyRotated{
		KeyId: k.id, SecretSha256: secretHash, Hint: hint, OldSecretNotAfter: timestamppb.New(notAfter),
	}}
	return e
}

// Ends of grace periods, with nanoseconds, which stores keep to the
// microsecond.
var (
	graceEnd        = time.Date(2030, time.March, 5, 1, 2, 3, 999999999, time.UTC)
	graceEnd2       = time.Date(2030, time.March, 5, 4, 5, 6, 7008, time.UTC)
	graceEnd2Stored = time.Date(2030, time.March, 5, 4, 5, 6, 7000, time.UTC)
)

// rotated is k as a store shows it after its last rotation, by the record
// with sequence seq, to the secret with hint, replacing the one with
// previous that stops at notAfter.
func rotated(k readmodel.Key, seq uint64, hint, previous string, notAfter time.Time) readmodel.Key {
	at := At(seq)
	k.Hint, k.PreviousHint, k.RotatedAt, k.PreviousNotAfter = hint, previous, &at, &notAfter
	return k
}

func (k key) deleted() *eventv1.Event {
	e := k.event()
	e.Payload = &eventv1.Event_KeyDeleted{KeyDeleted: &eventv1.KeyDeleted{KeyId: k.id}}
	return e
}

// row is the key as a store shows it after being created by the record
// with sequence seq.
func (k key) row(seq uint64, desc string, deployments ...string) readmodel.Key {
	return readmodel.Key{
		Project: k.project, Name: k.name, ID: k.id, Description: desc, Hint: k.hint(),
		CreatedAt: At(seq), DeploymentNames: deployments,
	}
}

func (d dep) event() *eventv1.Event {
	return event(d.project, eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, d.name)
}

func (d dep) model() string       { return "model-of-" + d.id }
func (d dep) upstreamURL() string { return "http://" + d.id + ".internal:8000" }

func (d dep) created(regions ...string) *eventv1.Event {
	e := d.event()
	e.Payload = &eventv1.Event_DeploymentCreated{DeploymentCreated: &eventv1.DeploymentCreated{
		DeploymentId: d.id, Name: d.name, Model: d.model(), UpstreamUrl: d.upstreamURL(), Regions: regions,
	}}
	return e
}

func (d dep) status(s eventv1.DeploymentStatus, reason string) *eventv1.Event {
	e := d.event()
	e.Payload = &eventv1.Event_DeploymentStatusChanged{DeploymentStatusChanged: &eventv1.DeploymentStatusChanged{
		DeploymentId: d.id, Status: s, Reason: reason,
	}}
	return e
}

func (d dep) authOn() *eventv1.Event {
	e := d.event()
	e.Payload = &eventv1.Event_DeploymentAuthEnabled{DeploymentAuthEnabled: &eventv1.DeploymentAuthEnabled{DeploymentId: d.id}}
	return e
}

func (d dep) authOff() *eventv1.Event {
	e := d.event()
	e.Payload = &eventv1.Event_DeploymentAuthDisabled{DeploymentAuthDisabled: &eventv1.DeploymentAuthDisabled{DeploymentId: d.id}}
	return e
}

func (d dep) link(k key) *eventv1.Event {
	e := d.event()
	e.Payload = &eventv1.Event_KeyLinked{KeyLinked: &eventv1.KeyLinked{DeploymentId: d.id, KeyId: k.id, KeyName: k.name}}
	return e
}

func (d dep) unlink(k key) *eventv1.Event {
	e := d.event()
	e.Payload = &eventv1.Event_KeyUnlinked{KeyUnlinked: &eventv1.KeyUnlinked{DeploymentId: d.id, KeyId: k.id, KeyName: k.name}}
	return e
}

func (d dep) deleted() *eventv1.Event {
	e := d.event()
	e.Payload = &eventv1.Event_DeploymentDeleted{DeploymentDeleted: &eventv1.DeploymentDeleted{DeploymentId: d.id}}
	return e
}

// row is the deployment as a store shows it after being created by the
// record with sequence seq, before any other change.
func (d dep) row(seq uint64, keys ...string) readmodel.Deployment {
	return readmodel.Deployment{
		Project: d.project, Name: d.name, ID: d.id, Model: d.model(), UpstreamURL: d.upstreamURL(),
		Status: readmodel.StatusDeploying, APIKeys: keys, CreatedAt: At(seq),
	}
}

func withStatus(d readmodel.Deployment, status, reason string) readmodel.Deployment {
	d.Status, d.StatusReason = status, reason
	return d
}

func withAuth(d readmodel.Deployment) readmodel.Deployment {
	d.AuthEnabled = true
	return d
}

func withRegions(d readmodel.Deployment, regions ...string) readmodel.Deployment {
	d.Regions = regions
	return d
}

func withExpiry(k readmodel.Key, t time.Time) readmodel.Key {
	k.ExpiresAt = &t
	return k
}

// batch is the events of one stream record.
type batch []*eventv1.Event

// Records turns batches into the stream records a store would be given:
// sequences 1, 2, …, and every event without a time gets At(sequence).
// Each record's own (stream) time is a little later than its events', so
// a store that used it instead of the event's would be caught.
func Records(batches ...[]*eventv1.Event) []eventstore.Record {
	recs := make([]eventstore.Record, len(batches))
	for i, b := range batches {
		seq := uint64(i + 1)
		recs[i] = record(seq, b...)
	}
	return recs
}

func record(seq uint64, events ...*eventv1.Event) eventstore.Record {
	rec := eventstore.Record{
		Sequence: seq,
		Time:     At(seq).Add(7 * time.Second),
		MsgID:    fmt.Sprintf("msg-%d", seq),
		Events:   events,
	}
	for _, e := range events {
		if e.GetTime() == nil {
			e.Time = timestamppb.New(At(seq))
		}
	}
	if len(events) > 0 {
		first := events[0]
		rec.Aggregate = eventstore.Aggregate{Project: first.GetProject(), Name: first.GetAggregate().GetName()}
		switch first.GetAggregate().GetType() {
		case eventv1.AggregateType_AGGREGATE_TYPE_KEY:
			rec.Aggregate.Type = eventstore.TypeKey
		case eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT:
			rec.Aggregate.Type = eventstore.TypeDeployment
		}
		rec.Subject = "infergate.events." + rec.Aggregate.Project + "." + rec.Aggregate.Type + "." + rec.Aggregate.Name
	}
	return rec
}

func applyAll(t *testing.T, s readmodel.Store, recs []eventstore.Record) {
	t.Helper()
	for _, r := range recs {
		if err := s.Apply(t.Context(), r); err != nil {
			t.Fatalf("Apply(sequence %d): %v", r.Sequence, err)
		}
	}
}

func testApply(t *testing.T, newStore func(t *testing.T) readmodel.Store) {
	deployed := eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED
	failed := eventv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED
	unspecified := eventv1.DeploymentStatus_DEPLOYMENT_STATUS_UNSPECIFIED

	// noNames is a KeyCreated whose payload has no name: the store takes
	// the event's aggregate name.
	noNames := notebook.created("from the aggregate", nil)
	noNames.GetKeyCreated().Name = ""
	// noAggregate has neither a payload name nor an event aggregate nor a
	// project: the store takes the record's.
	noAggregate := embed.created()
	noAggregate.GetDeploymentCreated().Name = ""
	noAggregate.Aggregate = nil
	noAggregate.Project = ""
	noAggregateRec := record(1, noAggregate)
	noAggregateRec.Aggregate = eventstore.Aggregate{Project: teamA, Type: eventstore.TypeDeployment, Name: embed.name}

	tests := []struct {
		name        string
		batches     []batch
		records     []eventstore.Record // used instead of batches when set
		keys        []readmodel.Key
		deployments []readmodel.Deployment
	}{{
		name: "empty",
	}, {
		name: "key created",
		batches: []batch{
			{ciRunner.created("runs CI", &expiry)},
			{notebook.created("", nil)},
		},
		keys: []readmodel.Key{
			withExpiry(ciRunner.row(1, "runs CI"), expiryStored),
			notebook.row(2, ""),
		},
	}, {
		name: "key name from the event's aggregate",
		batches: []batch{
			{noNames},
		},
		keys: []readmodel.Key{notebook.row(1, "from the aggregate")},
	}, {
		name: "key updated",
		batches: []batch{
			{ciRunner.created("old", nil)},
			{ciRunner.updated("new")},
			{ghostKey.updated("nobody")},
		},
		keys: []readmodel.Key{ciRunner.row(1, "new")},
	}, {
		name: "key expiry set, moved and removed",
		batches: []batch{
			{ciRunner.created("runs CI", nil)},
			{notebook.created("nb", &expiry)},
			{ciRunner.expiryChanged(&expiry)},
			{notebook.expiryChanged(nil)},
			{ghostKey.expiryChanged(nil)},
			{ciRunner2.expiryChanged(nil)}, // another life: ignored
		},
		keys: []readmodel.Key{
			withExpiry(ciRunner.row(1, "runs CI"), expiryStored),
			notebook.row(2, "nb"),
		},
	}, {
		name: "key rotated keeps its id, links and expiry",
		batches: []batch{
			{ciRunner.created("runs CI", &expiry)},
			{chat.created()},
			{chat.link(ciRunner)},
			{ciRunner.rotated("ig_…new1", graceEnd)},
			{ciRunner.rotated("ig_…new2", graceEnd2)},
			{ciRunner2.rotated("ig_…stale", graceEnd)}, // another life: ignored
		},
		keys: []readmodel.Key{
			rotated(withExpiry(ciRunner.row(1, "runs CI", "chat"), expiryStored), 5, "ig_…new2", "ig_…new1", graceEnd2Stored),
		},
		deployments: []readmodel.Deployment{chat.row(2, "ci-runner")},
	}, {
		name: "key deleted is unlinked everywhere",
		batches: []batch{
			{ciRunner.created("", nil)},
			{notebook.created("", nil)},
			{chat.created()},
			{embed.created()},
			{chat.link(ciRunner), chat.link(notebook)},
			{embed.link(ciRunner)},
			{ciRunner.deleted()},
		},
		keys:        []readmodel.Key{notebook.row(2, "", "chat")},
		deployments: []readmodel.Deployment{chat.row(3, "notebook"), embed.row(4)},
	}, {
		name: "key deleted and re-created has a new id and no links",
		batches: []batch{
			{ciRunner.created("first", nil)},
			{chat.created()},
			{chat.link(ciRunner)},
			{ciRunner.deleted()},
			{ciRunner2.created("second", nil)},
			{ciRunner.updated("stale id")},
		},
		keys:        []readmodel.Key{ciRunner2.row(5, "second")},
		deployments: []readmodel.Deployment{chat.row(2)},
	}, {
		name: "key created over a live name replaces it and its links",
		batches: []batch{
			{ciRunner.created("first", nil)},
			{chat.created()},
			{chat.link(ciRunner)},
			{ciRunner2.created("second", &expiry)},
		},
		keys:        []readmodel.Key{withExpiry(ciRunner2.row(4, "second"), expiryStored)},
		deployments: []readmodel.Deployment{chat.row(2)},
	}, {
		name: "link to a deleted key is ignored",
		batches: []batch{
			{ciRunner.created("", nil)},
			{chat.created()},
			{ciRunner.deleted()},
			{chat.link(ciRunner)},
			{ciRunner2.created("", nil)},
			{chat.link(ciRunner)}, // the old id, though the name lives again
		},
		keys:        []readmodel.Key{ciRunner2.row(5, "")},
		deployments: []readmodel.Deployment{chat.row(2)},
	}, {
		name: "link to a key or deployment that never was is ignored",
		batches: []batch{
			{ciRunner.created("", nil)},
			{chat.created()},
			{chat.link(ghostKey)},
			{ghostDep.link(ciRunner)},
		},
		keys:        []readmodel.Key{ciRunner.row(1, "")},
		deployments: []readmodel.Deployment{chat.row(2)},
	}, {
		name: "link to a key of another project is ignored",
		batches: []batch{
			{ciRunnerB.created("", nil)},
			{chat.created()},
			{chat.link(ciRunnerB)},
			{func() *eventv1.Event {
				// The same link, claiming to be in team-b, where chat's id
				// is unknown.
				e := chat.link(ciRunnerB)
				e.Project = teamB
				return e
			}()},
		},
		keys:        []readmodel.Key{ciRunnerB.row(1, "")},
		deployments: []readmodel.Deployment{chat.row(2)},
	}, {
		name: "links are sorted on both sides and a repeated link is one link",
		batches: []batch{
			{notebook.created("", nil)},
			{ciRunner.created("", nil)},
			{batchJob.created("", nil)},
			{embed.created()},
			{chat.created()},
			{embed.link(notebook), embed.link(ciRunner), embed.link(batchJob)},
			{chat.link(notebook)},
			{chat.link(notebook)},
		},
		keys: []readmodel.Key{
			batchJob.row(3, "", "embed"),
			ciRunner.row(2, "", "embed"),
			notebook.row(1, "", "chat", "embed"),
		},
		deployments: []readmodel.Deployment{
			chat.row(5, "notebook"),
			embed.row(4, "batch-job", "ci-runner", "notebook"),
		},
	}, {
		name: "unlink",
		batches: []batch{
			{ciRunner.created("", nil)},
			{notebook.created("", nil)},
			{chat.created()},
			{embed.created()},
			{chat.link(ciRunner), chat.link(notebook), embed.link(ciRunner)},
			{chat.unlink(ciRunner)},
			{chat.unlink(ghostKey)},
			{ghostDep.unlink(notebook)},
			{embed.unlink(notebook)}, // never linked there
		},
		keys: []readmodel.Key{
			ciRunner.row(1, "", "embed"),
			notebook.row(2, "", "chat"),
		},
		deployments: []readmodel.Deployment{chat.row(3, "notebook"), embed.row(4, "ci-runner")},
	}, {
		name: "deployment created",
		batches: []batch{
			{chat.created("eu-west", "us-east")},
			{embed.created()},
		},
		deployments: []readmodel.Deployment{
			withRegions(chat.row(1), "eu-west", "us-east"),
			embed.row(2),
		},
	}, {
		name:        "deployment name and project from the record",
		records:     []eventstore.Record{noAggregateRec},
		deployments: []readmodel.Deployment{embed.row(1)},
	}, {
		name: "deployment status",
		batches: []batch{
			{chat.created()},
			{embed.created()},
			{chat.status(deployed, "")},
			{embed.status(failed, "upstream did not answer")},
			{chat.status(unspecified, "ignored")},
			{ghostDep.status(deployed, "")},
		},
		deployments: []readmodel.Deployment{
			withStatus(chat.row(1), readmodel.StatusDeployed, ""),
			withStatus(embed.row(2), readmodel.StatusFailed, "upstream did not answer"),
		},
	}, {
		name: "auth enabled and disabled",
		batches: []batch{
			{chat.created()},
			{embed.created()},
			{chat.authOn()},
			{embed.authOn()},
			{embed.authOff()},
			{ghostDep.authOn()},
		},
		deployments: []readmodel.Deployment{withAuth(chat.row(1)), embed.row(2)},
	}, {
		name: "deployment deleted with its links",
		batches: []batch{
			{ciRunner.created("", nil)},
			{chat.created()},
			{embed.created()},
			{chat.link(ciRunner), embed.link(ciRunner)},
			{chat.deleted()},
			{chat.authOn()},
			{chat.link(ciRunner)},
		},
		keys:        []readmodel.Key{ciRunner.row(1, "", "embed")},
		deployments: []readmodel.Deployment{embed.row(3, "ci-runner")},
	}, {
		name: "deployment deleted and re-created starts afresh",
		batches: []batch{
			{ciRunner.created("", nil)},
			{chat.created("eu-west"), chat.authOn(), chat.link(ciRunner)},
			{chat.status(deployed, "")},
			{chat.deleted()},
			{chat2.created()},
			{chat.status(failed, "stale id"), chat.authOn(), chat.link(ciRunner)},
		},
		keys:        []readmodel.Key{ciRunner.row(1, "")},
		deployments: []readmodel.Deployment{chat2.row(5)},
	}, {
		name: "a record's events apply in order",
		batches: []batch{
			{ciRunner.created("", nil), ciRunner.updated("one"), ciRunner.updated("two")},
			{chat.created(), chat.authOn(), chat.link(ciRunner), chat.authOff(), chat.authOn()},
			{embed.created(), embed.link(ciRunner), embed.deleted()},
			{notebook.created("", nil), chat.link(notebook), notebook.deleted(), batchJob.created("", nil)},
		},
		keys: []readmodel.Key{
			batchJob.row(4, ""),
			ciRunner.row(1, "two", "chat"),
		},
		deployments: []readmodel.Deployment{withAuth(chat.row(2, "ci-runner"))},
	}, {
		name: "events without a payload are ignored",
		batches: []batch{
			{ciRunner.created("", nil)},
			{ciRunner.event(), chat.event()},
			{chat.created(), chat.event()},
		},
		keys:        []readmodel.Key{ciRunner.row(1, "")},
		deployments: []readmodel.Deployment{chat.row(3)},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newStore(t)
			recs := tt.records
			if recs == nil {
				bs := make([][]*eventv1.Event, len(tt.batches))
				for i, b := range tt.batches {
					bs[i] = b
				}
				recs = Records(bs...)
			}
			applyAll(t, s, recs)
			checkState(t, s, tt.keys, tt.deployments)
			want := uint64(len(recs))
			if got, err := s.Checkpoint(t.Context()); err != nil || got.Sequence != want {
				t.Errorf("Checkpoint() = %+v, %v; want sequence %d", got, err, want)
			}
		})
	}
}

// checkState checks that the store's keys and deployments, in every
// project the suite uses, are exactly the wanted ones, through both List
// and Get.
func checkState(t *testing.T, s readmodel.Store, keys []readmodel.Key, deployments []readmodel.Deployment) {
	t.Helper()
	ctx := t.Context()
	for _, project := range []string{teamA, teamB} {
		var wantKeys []readmodel.Key
		for _, k := range keys {
			if k.Project == project {
				wantKeys = append(wantKeys, k)
			}
		}
		slices.SortFunc(wantKeys, func(a, b readmodel.Key) int { return strings.Compare(a.Name, b.Name) })
		gotKeys, err := s.ListKeys(ctx, project, readmodel.Page{Limit: 1000})
		if err != nil {
			t.Fatalf("ListKeys(%s): %v", project, err)
		}
		if got, want := fmtKeys(gotKeys), fmtKeys(wantKeys); got != want {
			t.Errorf("ListKeys(%s):\n got: %s\nwant: %s", project, got, want)
		}
		for _, want := range wantKeys {
			got, err := s.GetKey(ctx, project, want.Name)
			if err != nil {
				t.Errorf("GetKey(%s, %s): %v", project, want.Name, err)
			} else if fmtKey(got) != fmtKey(want) {
				t.Errorf("GetKey(%s, %s):\n got: %s\nwant: %s", project, want.Name, fmtKey(got), fmtKey(want))
			}
		}

		var wantDeps []readmodel.Deployment
		for _, d := range deployments {
			if d.Project == project {
				wantDeps = append(wantDeps, d)
			}
		}
		slices.SortFunc(wantDeps, func(a, b readmodel.Deployment) int { return strings.Compare(a.Name, b.Name) })
		gotDeps, err := s.ListDeployments(ctx, project, readmodel.Page{Limit: 1000})
		if err != nil {
			t.Fatalf("ListDeployments(%s): %v", project, err)
		}
		if got, want := fmtDeployments(gotDeps), fmtDeployments(wantDeps); got != want {
			t.Errorf("ListDeployments(%s):\n got: %s\nwant: %s", project, got, want)
		}
		for _, want := range wantDeps {
			got, err := s.GetDeployment(ctx, project, want.Name)
			if err != nil {
				t.Errorf("GetDeployment(%s, %s): %v", project, want.Name, err)
			} else if fmtDeployment(got) != fmtDeployment(want) {
				t.Errorf("GetDeployment(%s, %s):\n got: %s\nwant: %s", project, want.Name, fmtDeployment(got), fmtDeployment(want))
			}
		}
	}
}

// fmtKey is a canonical text form of k, so comparisons ignore what a user
// cannot tell apart (nil or empty lists, a time's location).
func fmtKey(k readmodel.Key) string {
	expires := "never"
	if k.ExpiresAt != nil {
		expires = fmtTime(*k.ExpiresAt)
	}
	rotation := "never"
	if k.RotatedAt != nil || k.PreviousHint != "" || k.PreviousNotAfter != nil {
		rotation = fmt.Sprintf("{at=%s previous=%q until=%s}", fmtTimePtr(k.RotatedAt), k.PreviousHint, fmtTimePtr(k.PreviousNotAfter))
	}
	return fmt.Sprintf("{%s/%s id=%s desc=%q hint=%q expires=%s created=%s rotated=%s deployments=%q}",
		k.Project, k.Name, k.ID, k.Description, k.Hint, expires, fmtTime(k.CreatedAt), rotation, k.DeploymentNames)
}

func fmtKeys(ks []readmodel.Key) string {
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmtKey(k))
	}
	return "[" + strings.Join(parts, "\n       ") + "]"
}

// fmtDeployment is a canonical text form of d.
func fmtDeployment(d readmodel.Deployment) string {
	return fmt.Sprintf("{%s/%s id=%s model=%q upstream=%q regions=%q status=%s reason=%q auth=%t keys=%q created=%s}",
		d.Project, d.Name, d.ID, d.Model, d.UpstreamURL, d.Regions, d.Status, d.StatusReason, d.AuthEnabled,
		d.APIKeys, fmtTime(d.CreatedAt))
}

func fmtDeployments(ds []readmodel.Deployment) string {
	var parts []string
	for _, d := range ds {
		parts = append(parts, fmtDeployment(d))
	}
	return "[" + strings.Join(parts, "\n       ") + "]"
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "nil"
	}
	return fmtTime(*t)
}

func testCheckpoint(t *testing.T, s readmodel.Store) {
	ctx := t.Context()
	check := func(want uint64) {
		t.Helper()
		if got, err := s.Checkpoint(ctx); err != nil || got.Sequence != want {
			t.Fatalf("Checkpoint() = %+v, %v; want sequence %d", got, err, want)
		}
	}
	check(0)
	recs := Records(
		[]*eventv1.Event{ciRunner.created("", nil)},
		[]*eventv1.Event{chat.created()},
		[]*eventv1.Event{ghostDep.authOn()}, // changes nothing, still advances
	)
	for _, r := range recs {
		if err := s.Apply(ctx, r); err != nil {
			t.Fatal(err)
		}
		check(r.Sequence)
	}
	// Other subjects' messages leave gaps in a projection's sequences.
	if err := s.Apply(ctx, record(9, chat.authOn())); err != nil {
		t.Fatal(err)
	}
	check(9)
	// A record with no event at all still moves the checkpoint.
	if err := s.Apply(ctx, record(10)); err != nil {
		t.Fatal(err)
	}
	check(10)
	checkState(t, s, []readmodel.Key{ciRunner.row(1, "")}, []readmodel.Deployment{withAuth(chat.row(2))})
}

// testReset: a store built from one life of the stream, reset to another,
// holds nothing of the first, and its checkpoint names the new life; the
// new life's records then apply from sequence 1.
func testReset(t *testing.T, s readmodel.Store) {
	ctx := t.Context()
	old := eventstore.Identity{Stream: "INFERGATE_EVENTS", Created: base}
	if err := s.Reset(ctx, old); err != nil {
		t.Fatal(err)
	}
	applyAll(t, s, Records(
		[]*eventv1.Event{ciRunner.created("", nil)},
		[]*eventv1.Event{chat.created()},
		[]*eventv1.Event{chat.link(ciRunner)},
	))
	if got, err := s.Checkpoint(ctx); err != nil || !got.Stream.Equal(old) || got.Sequence != 3 {
		t.Fatalf("Checkpoint() = %+v, %v; want %s at 3", got, err, old)
	}
	recreated := eventstore.Identity{Stream: "INFERGATE_EVENTS", Created: base.Add(time.Hour)}
	if err := s.Reset(ctx, recreated); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Checkpoint(ctx); err != nil || !got.Stream.Equal(recreated) || got.Sequence != 0 {
		t.Fatalf("Checkpoint() after Reset = %+v, %v; want %s at 0", got, err, recreated)
	}
	checkState(t, s, nil, nil)
	for _, p := range []string{teamA, teamB} {
		if keys, err := s.ListKeys(ctx, p, readmodel.Page{Limit: 10}); err != nil || len(keys) != 0 {
			t.Fatalf("ListKeys(%s) after Reset = %v, %v; want none", p, keys, err)
		}
	}
	applyAll(t, s, Records([]*eventv1.Event{embed.created()}))
	checkState(t, s, nil, []readmodel.Deployment{embed.row(1)})
	// The stream gone: the zero identity.
	if err := s.Reset(ctx, eventstore.Identity{}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Checkpoint(ctx); err != nil || !got.Stream.IsZero() || got.Sequence != 0 {
		t.Fatalf("Checkpoint() after Reset to none = %+v, %v; want zero", got, err)
	}
	checkState(t, s, nil, nil)
}

func testReapply(t *testing.T, s readmodel.Store) {
	ctx := t.Context()
	recs := Records(
		[]*eventv1.Event{ciRunner.created("", nil)},
		[]*eventv1.Event{chat.created()},
		[]*eventv1.Event{chat.link(ciRunner)},
		[]*eventv1.Event{chat.unlink(ciRunner), ciRunner.deleted()},
	)
	applyAll(t, s, recs)
	// A projection that crashed after committing but before noting it
	// hands the store the same records again: nothing may change.
	applyAll(t, s, recs)
	for _, r := range []eventstore.Record{recs[2], recs[0]} {
		if err := s.Apply(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	// A different record at or below the checkpoint is ignored too.
	if err := s.Apply(ctx, record(4, notebook.created("", nil))); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(ctx, record(2, embed.created())); err != nil {
		t.Fatal(err)
	}
	checkState(t, s, nil, []readmodel.Deployment{chat.row(2)})
	if got, err := s.Checkpoint(ctx); err != nil || got.Sequence != 4 {
		t.Fatalf("Checkpoint() = %+v, %v; want sequence 4", got, err)
	}
}

func testPaging(t *testing.T, s readmodel.Store) {
	ctx := t.Context()
	names := []string{"echo", "alpha", "delta", "charlie", "bravo", "alpha-2", "b", "ab", "a-c"}
	var batches [][]*eventv1.Event
	for i, n := range names {
		batches = append(batches,
			[]*eventv1.Event{key{teamA, "key-" + n, fmt.Sprintf("key-%02d", i)}.created("", nil)},
			[]*eventv1.Event{dep{teamA, n, fmt.Sprintf("dep-%02d", i)}.created()},
			// Another project's rows must not show up in team-a's pages.
			[]*eventv1.Event{dep{teamB, n + "-b", fmt.Sprintf("depb-%02d", i)}.created()},
		)
	}
	applyAll(t, s, Records(batches...))

	sorted := slices.Clone(names)
	slices.Sort(sorted)
	for _, limit := range []int{1, 2, 3, len(names), 100} {
		var gotKeys, gotDeps []string
		after := ""
		for pages := 0; ; pages++ {
			if pages > len(names)+1 {
				t.Fatalf("limit %d: ListKeys does not end", limit)
			}
			page, err := s.ListKeys(ctx, teamA, readmodel.Page{After: after, Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > limit {
				t.Fatalf("ListKeys(limit %d) returned %d keys", limit, len(page))
			}
			if len(page) == 0 {
				break
			}
			for _, k := range page {
				gotKeys = append(gotKeys, strings.TrimPrefix(k.Name, "key-"))
			}
			after = page[len(page)-1].Name
		}
		after = ""
		for pages := 0; ; pages++ {
			if pages > len(names)+1 {
				t.Fatalf("limit %d: ListDeployments does not end", limit)
			}
			page, err := s.ListDeployments(ctx, teamA, readmodel.Page{After: after, Limit: limit})
			if err != nil {
				t.Fatal(err)
			}
			if len(page) > limit {
				t.Fatalf("ListDeployments(limit %d) returned %d deployments", limit, len(page))
			}
			if len(page) == 0 {
				break
			}
			for _, d := range page {
				gotDeps = append(gotDeps, d.Name)
			}
			after = page[len(page)-1].Name
		}
		if !slices.Equal(gotKeys, sorted) {
			t.Errorf("limit %d: keys paged as %q; want %q", limit, gotKeys, sorted)
		}
		if !slices.Equal(gotDeps, sorted) {
			t.Errorf("limit %d: deployments paged as %q; want %q", limit, gotDeps, sorted)
		}
	}

	// After need not be a name that exists.
	page, err := s.ListDeployments(ctx, teamA, readmodel.Page{After: "b0", Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if got := depNames(page); !slices.Equal(got, []string{"bravo", "charlie"}) {
		t.Errorf("ListDeployments(after b0, limit 2) = %q; want [bravo charlie]", got)
	}
	page, err = s.ListDeployments(ctx, teamA, readmodel.Page{After: "zulu", Limit: 2})
	if err != nil || len(page) != 0 {
		t.Errorf("ListDeployments(after zulu) = %q, %v; want none", depNames(page), err)
	}
}

func depNames(ds []readmodel.Deployment) []string {
	var out []string
	for _, d := range ds {
		out = append(out, d.Name)
	}
	return out
}

func testBadPage(t *testing.T, s readmodel.Store) {
	ctx := t.Context()
	applyAll(t, s, Records([]*eventv1.Event{ciRunner.created("", nil)}, []*eventv1.Event{chat.created()}))
	for _, limit := range []int{0, -1} {
		if _, err := s.ListKeys(ctx, teamA, readmodel.Page{Limit: limit}); err == nil {
			t.Errorf("ListKeys(limit %d) succeeded; want an error", limit)
		}
		if _, err := s.ListDeployments(ctx, teamA, readmodel.Page{Limit: limit}); err == nil {
			t.Errorf("ListDeployments(limit %d) succeeded; want an error", limit)
		}
	}
}

func testProjectsIsolated(t *testing.T, s readmodel.Store) {
	ctx := t.Context()
	applyAll(t, s, Records(
		[]*eventv1.Event{ciRunner.created("a", nil)},
		[]*eventv1.Event{ciRunnerB.created("b", nil)},
		[]*eventv1.Event{chat.created()},
		[]*eventv1.Event{chatB.created()},
		[]*eventv1.Event{chat.link(ciRunner), chat.authOn()},
		[]*eventv1.Event{chatB.link(ciRunnerB)},
		// team-b changes, some naming team-a's ids: only team-b's rows may
		// change, and only by team-b's ids.
		[]*eventv1.Event{inProject(teamB, ciRunner.updated("cross-project"))},
		[]*eventv1.Event{inProject(teamB, chat.status(eventv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED, "x"))},
		[]*eventv1.Event{inProject(teamB, chat.unlink(ciRunner))},
		[]*eventv1.Event{inProject(teamB, ciRunner.deleted()), inProject(teamB, chat.deleted())},
		[]*eventv1.Event{chatB.status(eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED, "")},
		[]*eventv1.Event{ciRunnerB.deleted()},
	))
	checkState(t, s,
		[]readmodel.Key{ciRunner.row(1, "a", "chat")},
		[]readmodel.Deployment{
			withAuth(chat.row(3, "ci-runner")),
			withStatus(chatB.row(4), readmodel.StatusDeployed, ""),
		})
	if _, err := s.GetKey(ctx, teamB, "ci-runner"); !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("GetKey(team-b, ci-runner) after its delete: err = %v; want ErrNotFound", err)
	}
	if _, err := s.GetKey(ctx, "team-c", "ci-runner"); !errors.Is(err, readmodel.ErrNotFound) {
		t.Errorf("GetKey(team-c, ci-runner): err = %v; want ErrNotFound", err)
	}
	if keys, err := s.ListKeys(ctx, "team-c", readmodel.Page{Limit: 10}); err != nil || len(keys) != 0 {
		t.Errorf("ListKeys(team-c) = %v, %v; want none", keys, err)
	}
}

// inProject moves e to another project, ids unchanged.
func inProject(project string, e *eventv1.Event) *eventv1.Event {
	e.Project = project
	return e
}

func testNotFound(t *testing.T, s readmodel.Store) {
	ctx := t.Context()
	applyAll(t, s, Records(
		[]*eventv1.Event{ciRunner.created("", nil)},
		[]*eventv1.Event{chat.created()},
		[]*eventv1.Event{embed.created()},
		[]*eventv1.Event{notebook.created("", nil)},
		[]*eventv1.Event{embed.deleted()},
		[]*eventv1.Event{notebook.deleted()},
	))
	for _, name := range []string{"nobody", "notebook", "chat", ""} {
		_, err := s.GetKey(ctx, teamA, name)
		if !errors.Is(err, readmodel.ErrNotFound) {
			t.Errorf("GetKey(team-a, %q): err = %v; want ErrNotFound", name, err)
		}
	}
	for _, name := range []string{"nowhere", "embed", "ci-runner", ""} {
		_, err := s.GetDeployment(ctx, teamA, name)
		if !errors.Is(err, readmodel.ErrNotFound) {
			t.Errorf("GetDeployment(team-a, %q): err = %v; want ErrNotFound", name, err)
		}
	}
	if _, err := s.GetKey(ctx, teamA, "ci-runner"); err != nil {
		t.Errorf("GetKey(team-a, ci-runner): %v", err)
	}
}

func testCopies(t *testing.T, s readmodel.Store) {
	ctx := t.Context()
	applyAll(t, s, Records(
		[]*eventv1.Event{ciRunner.created("", &expiry)},
		[]*eventv1.Event{notebook.created("", nil)},
		[]*eventv1.Event{chat.created("eu-west", "us-east")},
		[]*eventv1.Event{chat.link(ciRunner), chat.link(notebook)},
	))
	wantKeys := []readmodel.Key{
		withExpiry(ciRunner.row(1, "", "chat"), expiryStored),
		notebook.row(2, "", "chat"),
	}
	wantDeps := []readmodel.Deployment{withRegions(chat.row(3, "ci-runner", "notebook"), "eu-west", "us-east")}

	scribble := func() {
		k, err := s.GetKey(ctx, teamA, "ci-runner")
		if err != nil {
			t.Fatal(err)
		}
		k.DeploymentNames[0] = "scribbled"
		*k.ExpiresAt = time.Time{}
		keys, err := s.ListKeys(ctx, teamA, readmodel.Page{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		for i := range keys {
			keys[i].Name = "scribbled"
			if len(keys[i].DeploymentNames) > 0 {
				keys[i].DeploymentNames[0] = "scribbled"
			}
			if keys[i].ExpiresAt != nil {
				*keys[i].ExpiresAt = time.Time{}
			}
		}
		d, err := s.GetDeployment(ctx, teamA, "chat")
		if err != nil {
			t.Fatal(err)
		}
		d.Regions[0] = "scribbled"
		d.APIKeys[0] = "scribbled"
		deps, err := s.ListDeployments(ctx, teamA, readmodel.Page{Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		for i := range deps {
			deps[i].Regions[0] = "scribbled"
			deps[i].APIKeys[0] = "scribbled"
			// Appending must not write into a store's spare capacity.
			_ = append(deps[i].APIKeys[:1], "appended")
			_ = append(deps[i].Regions[:1], "appended")
		}
	}
	scribble()
	checkState(t, s, wantKeys, wantDeps)
}

func testConcurrentUse(t *testing.T, s readmodel.Store) {
	ctx := t.Context()
	var batches [][]*eventv1.Event
	for i := range 40 {
		k := key{teamA, fmt.Sprintf("key-%02d", i), fmt.Sprintf("key-id-%02d", i)}
		batches = append(batches, []*eventv1.Event{k.created("", nil), chat.link(k)})
	}
	recs := Records(append([][]*eventv1.Event{{chat.created()}}, batches...)...)
	var wg sync.WaitGroup
	readers, cancel := context.WithCancel(ctx)
	defer cancel()
	for range 4 {
		wg.Go(func() {
			for readers.Err() == nil {
				if _, err := s.ListKeys(readers, teamA, readmodel.Page{Limit: 100}); err != nil && readers.Err() == nil {
					t.Errorf("ListKeys: %v", err)
					return
				}
				if _, err := s.GetDeployment(readers, teamA, "chat"); err != nil &&
					!errors.Is(err, readmodel.ErrNotFound) && readers.Err() == nil {
					t.Errorf("GetDeployment: %v", err)
					return
				}
			}
		})
	}
	applyAll(t, s, recs)
	cancel()
	wg.Wait()
	d, err := s.GetDeployment(ctx, teamA, "chat")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.APIKeys) != 40 {
		t.Errorf("chat has %d keys after the concurrent run; want 40", len(d.APIKeys))
	}
}
