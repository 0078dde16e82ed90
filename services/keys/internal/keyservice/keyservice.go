// Package keyservice serves infergate.key.v1.KeyService: commands are
// decided against the key aggregate's own events and appended to the
// stream; queries are answered from the read model.
package keyservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	keyv1 "github.com/infergate/infergate/gen/infergate/key/v1"
	"github.com/infergate/infergate/gen/infergate/key/v1/keyv1connect"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/command"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/paging"
	"github.com/infergate/infergate/services/internal/propagation"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/rpcerr"
	"github.com/infergate/infergate/services/internal/tasks"
)

var _ keyv1connect.KeyServiceHandler = (*Server)(nil)

// Config is what the service needs.
type Config struct {
	// Events is the event store. Required.
	Events *eventstore.Store
	// Reads is the read model the Projector fills. Required.
	Reads readmodel.Store
	// Projector keeps Reads up to date (a *readmodel.Projector); writes
	// wait for it, briefly, so a read after a write sees the write.
	// Required.
	Projector command.ReadProgress
	// Propagation reports how far a deletion has reached the gateways;
	// default propagation.Unconfirmed.
	Propagation propagation.Waiter
	// PropagationTimeout bounds that wait by default; default 2 s.
	PropagationTimeout time.Duration
	// ReadYourWritesTimeout bounds the wait for the read model after a
	// write; default command.DefaultReadYourWritesTimeout. A read model
	// still behind then does not fail the write: the answer says so.
	ReadYourWritesTimeout time.Duration
	// Log receives errors and events; never a secret. Default slog.Default().
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Tasks records the task a create with links answers with; default a
	// registry of the service's own on Propagation.
	Tasks *tasks.Registry
}

func (c *Config) setDefaults() {
	if c.Propagation == nil {
		c.Propagation = propagation.Unconfirmed{}
	}
	if c.PropagationTimeout == 0 {
		c.PropagationTimeout = propagation.DefaultTimeout
	}
	if c.ReadYourWritesTimeout == 0 {
		c.ReadYourWritesTimeout = command.DefaultReadYourWritesTimeout
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Tasks == nil {
		c.Tasks = tasks.New(tasks.Config{Waiter: c.Propagation})
	}
}

// Validate reports every missing dependency at once.
func (c *Config) Validate() error {
	var errs []error
	if c.Events == nil {
		errs = append(errs, errors.New("keyservice: Events is required"))
	}
	if c.Reads == nil {
		errs = append(errs, errors.New("keyservice: Reads is required"))
	}
	if c.Projector == nil {
		errs = append(errs, errors.New("keyservice: Projector is required"))
	}
	return errors.Join(errs...)
}

// Server implements keyv1connect.KeyServiceHandler.
type Server struct {
	cfg Config
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Server{cfg: cfg}, nil
}

func keyAggregate(project, name string) eventstore.Aggregate {
	return eventstore.Aggregate{Project: project, Type: eventstore.TypeKey, Name: name}
}

// foldKey is the key as a command left it: its records then plus the
// events the command appended.
func foldKey(name string, res eventstore.DecideResult) aggregate.Key {
	return aggregate.KeyFrom(name, res.State())
}

// behind waits, briefly, for the read model to apply seq, and reports
// whether it is still behind.
func (s *Server) behind(ctx context.Context, seq uint64) bool {
	return !command.WaitRead(ctx, s.cfg.Projector, seq, s.cfg.ReadYourWritesTimeout)
}

func (s *Server) fail(ctx context.Context, err error) error { return rpcerr.From(ctx, s.cfg.Log, err) }

// CreateKey creates a key and returns its secret, once. Once the
// KeyCreated is appended the call succeeds and returns the secret, whatever
// the read model does; a retry with the same Idempotency-Key is answered
// with the key, replayed set and no secret.
func (s *Server) CreateKey(ctx context.Context, req *connect.Request[keyv1.CreateKeyRequest]) (*connect.Response[keyv1.CreateKeyResponse], error) {
	m := req.Msg
	meta := command.Meta(ctx, m.GetProject(), s.cfg.Now())
	secret, err := apikey.Generate()
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	nk := aggregate.NewKey{
		Name:        m.GetName(),
		Description: m.GetDescription(),
		Hash:        apikey.Sum(secret),
		Hint:        apikey.Hint(secret),
	}
	if m.GetExpiresAt() != nil {
		if err := m.GetExpiresAt().CheckValid(); err != nil {
			return nil, s.fail(ctx, &aggregate.FieldError{Field: "expires_at", Problem: "is not a valid time"})
		}
		t := m.GetExpiresAt().AsTime()
		nk.ExpiresAt = &t
	}
	links := slices.Clone(m.GetDeploymentNames())
	slices.Sort(links)
	links = slices.Compact(links)
	if err := errors.Join(
		aggregate.ValidateNewKey(m.GetProject(), nk, meta.Now),
		aggregate.ValidateNames("deployment_names", links, aggregate.ValidateDeploymentName),
		maxLinks(links),
	); err != nil {
		return nil, s.fail(ctx, err)
	}
	timeout, err := command.PropagationTimeout(m.GetPropagationTimeout(), s.cfg.PropagationTimeout)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	agg := keyAggregate(m.GetProject(), m.GetName())
	msgID := command.MsgID(req.Header(), meta, req.Spec().Procedure, agg)
	var (
		res     eventstore.DecideResult
		regions []string
	)
	if len(links) == 0 {
		res, err = s.cfg.Events.Decide(ctx, agg, msgID, 0,
			func(records []eventstore.Record) ([]*eventv1.Event, error) {
				return aggregate.KeyFrom(m.GetName(), eventstore.Events(records)).Create(meta, nk)
			})
	} else {
		res, regions, err = s.createLinked(ctx, meta, agg, msgID, nk, links)
	}
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	// Committed: from here on nothing turns the call into an error.
	k := foldKey(m.GetName(), res)
	out := &keyv1.CreateKeyResponse{
		// A key just created is linked to what it was created with.
		Key:             toProto(m.GetProject(), k, links),
		ReadModelBehind: s.behind(ctx, res.Sequence),
	}
	if len(links) > 0 {
		if res.Duplicate {
			out.Key.DeploymentNames = s.deploymentNames(ctx, m.GetProject(), k)
		}
		out.Propagation = s.cfg.Propagation.Wait(ctx, res.Sequence, regions, timeout)
		out.Tasks = []string{s.cfg.Tasks.Start(tasks.CreateAPIKey, m.GetProject(), regions, out.Propagation)}
	}
	if res.Duplicate {
		out.Replayed = true
		s.cfg.Log.InfoContext(ctx, "key create replayed", "project", m.GetProject(), "key", m.GetName(), "actor", meta.Actor, "sequence", res.Sequence)
	} else {
		out.Secret = secret
		s.cfg.Log.InfoContext(ctx, "key created", "project", m.GetProject(), "key", m.GetName(), "deployments", len(links), "actor", meta.Actor, "sequence", res.Sequence)
	}
	return connect.NewResponse(out), nil
}

// maxLinks bounds the deployments one create links (one atomic batch).
func maxLinks(links []string) error {
	if len(links) >= eventstore.MaxAtomicChanges {
		return &aggregate.FieldError{Field: "deployment_names", Problem: fmt.Sprintf("at most %d deployments", eventstore.MaxAtomicChanges-1)}
	}
	return nil
}

// createLinked creates a key and links it to deployments as one change:
// the KeyCreated on the key's subject and a KeyLinked on each deployment's
// subject (links belong to the deployment aggregate, and are decided by
// its own rule, aggregate.Deployment.Link), appended as one atomic batch
// in which every aggregate keeps its own optimistic check. An unknown
// deployment fails the command before anything is appended; a deployment
// deleted or changed meanwhile fails the whole batch, which is decided
// again. It returns the regions whose gateways must apply the change
// (empty: every region).
func (s *Server) createLinked(ctx context.Context, meta aggregate.Meta, agg eventstore.Aggregate, msgID string, nk aggregate.NewKey, links []string) (eventstore.DecideResult, []string, error) {
	if msgID == "" {
		msgID = meta.NewID()
	}
	const attempts = 5
	for attempt := range attempts {
		records, version, err := s.cfg.Events.Load(ctx, agg)
		if err != nil {
			return eventstore.DecideResult{}, nil, err
		}
		for i, r := range records {
			if r.MsgID == msgID {
				res := eventstore.DecideResult{Sequence: s.lastOfBatch(ctx, meta.Project, msgID, links, r.Sequence), Duplicate: true, Records: records[: i+1 : i+1]}
				return res, s.regionsOf(ctx, meta.Project, links), nil
			}
		}
		created, err := aggregate.KeyFrom(nk.Name, eventstore.Events(records)).Create(meta, nk)
		if err != nil {
			return eventstore.DecideResult{}, nil, err
		}
		live := aggregate.LiveKeys{nk.Name: created[0].GetKeyCreated().GetKeyId()}
		changes := []eventstore.Change{{Aggregate: agg, ExpectedVersion: version, Events: created}}
		var regions []string
		everywhere := false
		for _, name := range links {
			dagg := eventstore.Aggregate{Project: meta.Project, Type: eventstore.TypeDeployment, Name: name}
			drecs, dversion, err := s.cfg.Events.Load(ctx, dagg)
			if err != nil {
				return eventstore.DecideResult{}, nil, err
			}
			d := aggregate.DeploymentFrom(name, eventstore.Events(drecs))
			if !d.Live {
				return eventstore.DecideResult{}, nil, fmt.Errorf("%w: deployment_names: deployment %q", aggregate.ErrNotFound, name)
			}
			linked, err := d.Link(meta, nk.Name, live)
			if err != nil {
				return eventstore.DecideResult{}, nil, err
			}
			changes = append(changes, eventstore.Change{Aggregate: dagg, ExpectedVersion: dversion, Events: linked})
			everywhere = everywhere || len(d.Regions) == 0
			regions = append(regions, d.Regions...)
		}
		if everywhere {
			regions = nil
		}
		res, err := s.cfg.Events.AppendAtomic(ctx, msgID, changes)
		if err == nil && res.Duplicate {
			// Stored by an earlier attempt that raced this one: answer
			// from the key as that attempt left it.
			dup := eventstore.DecideResult{Sequence: s.lastOfBatch(ctx, meta.Project, msgID, links, res.Sequence), Duplicate: true}
			if records, _, err := s.cfg.Events.Load(ctx, agg); err == nil {
				for i, r := range records {
					if r.MsgID == msgID {
						dup.Records = records[: i+1 : i+1]
					}
				}
			}
			return dup, regions, nil
		}
		if err == nil {
			return eventstore.DecideResult{Sequence: res.Sequence, Records: records, Events: created}, regions, nil
		}
		if !errors.Is(err, eventstore.ErrConflict) {
			return eventstore.DecideResult{}, nil, err
		}
		select {
		case <-ctx.Done():
			return eventstore.DecideResult{}, nil, ctx.Err()
		case <-time.After(time.Duration(1+attempt) * time.Millisecond):
		}
	}
	return eventstore.DecideResult{}, nil, fmt.Errorf("%w: %w: %s and %d deployments after %d attempts", eventstore.ErrTooManyConflicts, eventstore.ErrConflict, agg, len(links), attempts)
}

// lastOfBatch is the sequence of the last message a stored create-with-
// links appended (the links follow the key, under the message ids
// msgID/1, msgID/2, … in the order of links), so a replayed answer waits
// for the same change as the first one did. first is the key's message.
func (s *Server) lastOfBatch(ctx context.Context, project, msgID string, links []string, first uint64) uint64 {
	last := first
	for i, name := range links {
		recs, _, err := s.cfg.Events.LoadAfter(ctx, eventstore.Aggregate{Project: project, Type: eventstore.TypeDeployment, Name: name}, first)
		if err != nil {
			continue
		}
		for _, r := range recs {
			if r.MsgID == msgID+"/"+strconv.Itoa(i+1) {
				last = max(last, r.Sequence)
			}
		}
	}
	return last
}

// regionsOf are the regions a replayed create's links reach, as far as the
// read model knows them (empty: every region).
func (s *Server) regionsOf(ctx context.Context, project string, links []string) []string {
	var regions []string
	for _, name := range links {
		d, err := s.cfg.Reads.GetDeployment(ctx, project, name)
		if err != nil || len(d.Regions) == 0 {
			return nil
		}
		regions = append(regions, d.Regions...)
	}
	return regions
}

// GetKey returns one key.
func (s *Server) GetKey(ctx context.Context, req *connect.Request[keyv1.GetKeyRequest]) (*connect.Response[keyv1.GetKeyResponse], error) {
	m := req.Msg
	if err := errors.Join(aggregate.ValidateProject("project", m.GetProject()), aggregate.ValidateKeyName("name", m.GetName())); err != nil {
		return nil, s.fail(ctx, err)
	}
	k, err := s.cfg.Reads.GetKey(ctx, m.GetProject(), m.GetName())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(&keyv1.GetKeyResponse{Key: readProto(k)}), nil
}

// ListKeys returns a page of the project's keys.
func (s *Server) ListKeys(ctx context.Context, req *connect.Request[keyv1.ListKeysRequest]) (*connect.Response[keyv1.ListKeysResponse], error) {
	m := req.Msg
	if err := aggregate.ValidateProject("project", m.GetProject()); err != nil {
		return nil, s.fail(ctx, err)
	}
	page, err := paging.Parse(m.GetPageSize(), m.GetPageToken())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	keys, err := s.cfg.Reads.ListKeys(ctx, m.GetProject(), page)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	keys, next := paging.Trim(keys, page, func(k readmodel.Key) string { return k.Name })
	out := &keyv1.ListKeysResponse{NextPageToken: next}
	for _, k := range keys {
		out.Keys = append(out.Keys, readProto(k))
	}
	return connect.NewResponse(out), nil
}

// UpdateKey changes a key's description.
func (s *Server) UpdateKey(ctx context.Context, req *connect.Request[keyv1.UpdateKeyRequest]) (*connect.Response[keyv1.UpdateKeyResponse], error) {
	m := req.Msg
	meta := command.Meta(ctx, m.GetProject(), s.cfg.Now())
	if err := errors.Join(
		aggregate.ValidateProject("project", m.GetProject()),
		aggregate.ValidateKeyName("name", m.GetName()),
		aggregate.ValidateDescription("description", m.GetDescription()),
	); err != nil {
		return nil, s.fail(ctx, err)
	}
	agg := keyAggregate(m.GetProject(), m.GetName())
	res, err := s.cfg.Events.Decide(ctx, agg, command.MsgID(req.Header(), meta, req.Spec().Procedure, agg), 0,
		func(records []eventstore.Record) ([]*eventv1.Event, error) {
			return aggregate.KeyFrom(m.GetName(), eventstore.Events(records)).Update(meta, m.GetDescription())
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	behind := s.behind(ctx, res.Sequence)
	k := foldKey(m.GetName(), res)
	return connect.NewResponse(&keyv1.UpdateKeyResponse{
		Key:             toProto(m.GetProject(), k, s.deploymentNames(ctx, m.GetProject(), k)),
		ReadModelBehind: behind,
	}), nil
}

// DeleteKey deletes a key; it stops working at every gateway.
func (s *Server) DeleteKey(ctx context.Context, req *connect.Request[keyv1.DeleteKeyRequest]) (*connect.Response[keyv1.DeleteKeyResponse], error) {
	m := req.Msg
	meta := command.Meta(ctx, m.GetProject(), s.cfg.Now())
	if err := errors.Join(aggregate.ValidateProject("project", m.GetProject()), aggregate.ValidateKeyName("name", m.GetName())); err != nil {
		return nil, s.fail(ctx, err)
	}
	timeout, err := command.PropagationTimeout(m.GetPropagationTimeout(), s.cfg.PropagationTimeout)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	agg := keyAggregate(m.GetProject(), m.GetName())
	res, err := s.cfg.Events.Decide(ctx, agg, command.MsgID(req.Header(), meta, req.Spec().Procedure, agg), 0,
		func(records []eventstore.Record) ([]*eventv1.Event, error) {
			return aggregate.KeyFrom(m.GetName(), eventstore.Events(records)).Delete(meta)
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	behind := s.behind(ctx, res.Sequence)
	s.cfg.Log.InfoContext(ctx, "key deleted", "project", m.GetProject(), "key", m.GetName(), "actor", meta.Actor, "sequence", res.Sequence)
	return connect.NewResponse(&keyv1.DeleteKeyResponse{
		Propagation:     s.cfg.Propagation.Wait(ctx, res.Sequence, nil, timeout),
		ReadModelBehind: behind,
	}), nil
}

// deploymentNames are the deployments the key is linked to. Links belong
// to the deployments' aggregates, not the key's, so they come from the
// read model — as far as it has got — when it holds this very key.
func (s *Server) deploymentNames(ctx context.Context, project string, k aggregate.Key) []string {
	rk, err := s.cfg.Reads.GetKey(ctx, project, k.Name)
	if err != nil || rk.ID != k.ID {
		return nil
	}
	return rk.DeploymentNames
}

// toProto shows a key as a command left it.
func toProto(project string, k aggregate.Key, deployments []string) *keyv1.Key {
	out := &keyv1.Key{
		Project:         project,
		Name:            k.Name,
		Id:              k.ID,
		Description:     k.Description,
		CreatedAt:       timestamppb.New(readmodel.NormalTime(k.CreatedAt)),
		DeploymentNames: deployments,
		Hint:            k.Hint,
	}
	if k.ExpiresAt != nil {
		out.ExpiresAt = timestamppb.New(readmodel.NormalTime(*k.ExpiresAt))
	}
	return out
}

// readProto shows a key as the read model has it.
func readProto(k readmodel.Key) *keyv1.Key {
	out := &keyv1.Key{
		Project:         k.Project,
		Name:            k.Name,
		Id:              k.ID,
		Description:     k.Description,
		CreatedAt:       timestamppb.New(k.CreatedAt),
		DeploymentNames: k.DeploymentNames,
		Hint:            k.Hint,
	}
	if k.ExpiresAt != nil {
		out.ExpiresAt = timestamppb.New(*k.ExpiresAt)
	}
	return out
}
