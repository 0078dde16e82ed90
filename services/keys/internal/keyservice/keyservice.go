// Package keyservice serves infergate.key.v1.KeyService: commands are
// decided against the key aggregate's own events and appended to the
// stream; queries are answered from the read model.
package keyservice

import (
	"context"
	"errors"
	"log/slog"
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
)

var _ keyv1connect.KeyServiceHandler = (*Server)(nil)

// ErrAlreadyApplied means a CreateKey was retried with an Idempotency-Key
// that already created the key; its secret was shown once and is gone.
var ErrAlreadyApplied = errors.New("this request was already applied (Idempotency-Key reused); the key exists and its secret was shown only once")

// Config is what the service needs.
type Config struct {
	// Events is the event store. Required.
	Events *eventstore.Store
	// Reads is the read model the Projector fills. Required.
	Reads readmodel.Store
	// Projector keeps Reads up to date; writes wait for it so a read after
	// a write sees the write. Required.
	Projector *readmodel.Projector
	// Propagation reports how far a deletion has reached the gateways;
	// default propagation.Unconfirmed.
	Propagation propagation.Waiter
	// PropagationTimeout bounds that wait by default; default 2 s.
	PropagationTimeout time.Duration
	// ReadYourWritesTimeout bounds the wait for the read model after a
	// write; default 5 s.
	ReadYourWritesTimeout time.Duration
	// Log receives errors and events; never a secret. Default slog.Default().
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.Propagation == nil {
		c.Propagation = propagation.Unconfirmed{}
	}
	if c.PropagationTimeout == 0 {
		c.PropagationTimeout = propagation.DefaultTimeout
	}
	if c.ReadYourWritesTimeout == 0 {
		c.ReadYourWritesTimeout = 5 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
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

func foldKey(name string, records []eventstore.Record) aggregate.Key {
	return aggregate.KeyFrom(name, eventstore.Events(records))
}

func (s *Server) fail(ctx context.Context, err error) error { return rpcerr.From(ctx, s.cfg.Log, err) }

// CreateKey creates a key and returns its secret, once.
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
	if err := aggregate.ValidateNewKey(m.GetProject(), nk, meta.Now); err != nil {
		return nil, s.fail(ctx, err)
	}
	agg := keyAggregate(m.GetProject(), m.GetName())
	res, err := s.cfg.Events.Decide(ctx, agg, command.MsgID(req.Header(), meta, req.Spec().Procedure, agg), 0,
		func(records []eventstore.Record) ([]*eventv1.Event, error) {
			return foldKey(m.GetName(), records).Create(meta, nk)
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	if res.Duplicate {
		return nil, connect.NewError(connect.CodeAlreadyExists, ErrAlreadyApplied)
	}
	key, err := s.readAfterWrite(ctx, res.Sequence, m.GetProject(), m.GetName())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	s.cfg.Log.InfoContext(ctx, "key created", "project", m.GetProject(), "key", m.GetName(), "actor", meta.Actor, "sequence", res.Sequence)
	return connect.NewResponse(&keyv1.CreateKeyResponse{Key: key, Secret: secret}), nil
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
	return connect.NewResponse(&keyv1.GetKeyResponse{Key: toProto(k)}), nil
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
		out.Keys = append(out.Keys, toProto(k))
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
			return foldKey(m.GetName(), records).Update(meta, m.GetDescription())
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	key, err := s.readAfterWrite(ctx, res.Sequence, m.GetProject(), m.GetName())
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(&keyv1.UpdateKeyResponse{Key: key}), nil
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
			return foldKey(m.GetName(), records).Delete(meta)
		})
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	if err := command.WaitRead(ctx, s.cfg.Projector, res.Sequence, s.cfg.ReadYourWritesTimeout); err != nil {
		return nil, s.fail(ctx, err)
	}
	s.cfg.Log.InfoContext(ctx, "key deleted", "project", m.GetProject(), "key", m.GetName(), "actor", meta.Actor, "sequence", res.Sequence)
	return connect.NewResponse(&keyv1.DeleteKeyResponse{
		Propagation: s.cfg.Propagation.Wait(ctx, res.Sequence, nil, timeout),
	}), nil
}

func (s *Server) readAfterWrite(ctx context.Context, seq uint64, project, name string) (*keyv1.Key, error) {
	if err := command.WaitRead(ctx, s.cfg.Projector, seq, s.cfg.ReadYourWritesTimeout); err != nil {
		return nil, err
	}
	k, err := s.cfg.Reads.GetKey(ctx, project, name)
	if err != nil {
		return nil, err
	}
	return toProto(k), nil
}

func toProto(k readmodel.Key) *keyv1.Key {
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
