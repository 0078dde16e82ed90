// Package auditservice serves infergate.audit.v1.AuditService: it answers
// questions about the past by replaying the event stream — with subject
// filters for event listings, and through the gateway's own auth map for
// "would this key have been let in?" — so it needs no store of its own.
package auditservice

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	"github.com/infergate/infergate/gen/infergate/audit/v1/auditv1connect"
	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/audit/internal/describe"
	"github.com/infergate/infergate/services/audit/internal/history"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/paging"
	"github.com/infergate/infergate/services/internal/rpcerr"
)

var _ auditv1connect.AuditServiceHandler = (*Server)(nil)

// Config is what the service needs.
type Config struct {
	// Events is the event store. Required.
	Events *eventstore.Store
	// History keeps checkpoints of each project's auth state, so
	// CheckAccess and GetStateAt replay only from the nearest one. Without
	// it they replay the project's whole history. Run it alongside.
	History *history.Index
	// Log receives errors. Default slog.Default().
	Log *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Server implements auditv1connect.AuditServiceHandler.
type Server struct {
	cfg Config
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Events == nil {
		return nil, errors.New("auditservice: Events is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{cfg: cfg}, nil
}

func (s *Server) fail(ctx context.Context, err error) error { return rpcerr.From(ctx, s.cfg.Log, err) }

func invalid(field, problem string) error {
	return &aggregate.FieldError{Field: field, Problem: problem}
}

// ListEvents returns the project's events in stream order, filtered, a
// page at a time. The page token is the stream sequence to go on from, so
// pages are stable while new events are appended.
func (s *Server) ListEvents(ctx context.Context, req *connect.Request[auditv1.ListEventsRequest]) (*connect.Response[auditv1.ListEventsResponse], error) {
	m := req.Msg
	errs := []error{aggregate.ValidateProject("project", m.GetProject())}
	if m.GetKey() != "" {
		errs = append(errs, aggregate.ValidateKeyName("key", m.GetKey()))
	}
	if m.GetDeployment() != "" {
		errs = append(errs, aggregate.ValidateDeploymentName("deployment", m.GetDeployment()))
	}
	for i, typ := range m.GetTypes() {
		if !slices.Contains(describe.Types, typ) {
			errs = append(errs, invalid("types["+strconv.Itoa(i)+"]", strconv.Quote(typ)+" is not an event type"))
		}
	}
	if m.GetSince() != nil && m.GetUntil() != nil && !m.GetSince().AsTime().Before(m.GetUntil().AsTime()) {
		errs = append(errs, invalid("until", "must be after since"))
	}
	if m.GetPageSize() < 0 || m.GetPageSize() > paging.MaxSize {
		errs = append(errs, invalid("page_size", "must be between 0 and 1000"))
	}
	var from uint64
	if t := m.GetPageToken(); t != "" {
		n, err := strconv.ParseUint(t, 10, 64)
		if err != nil || n == 0 {
			errs = append(errs, invalid("page_token", "is not a token this service issued"))
		}
		from = n
	}
	if err := errors.Join(errs...); err != nil {
		return nil, s.fail(ctx, err)
	}
	size := int(m.GetPageSize())
	if size == 0 {
		size = paging.DefaultSize
	}

	var opts []eventstore.FollowOption
	switch {
	case m.GetDeployment() != "":
		opts = append(opts, eventstore.WithAggregates(eventstore.Aggregate{Project: m.GetProject(), Type: eventstore.TypeDeployment, Name: m.GetDeployment()}))
	case m.GetKey() != "":
		// The key's own events and its links, which live on deployments.
		opts = append(opts,
			eventstore.WithAggregates(eventstore.Aggregate{Project: m.GetProject(), Type: eventstore.TypeKey, Name: m.GetKey()}),
			eventstore.WithAggregateType(m.GetProject(), eventstore.TypeDeployment))
	default:
		opts = append(opts, eventstore.WithProject(m.GetProject()))
	}
	if m.GetSince() != nil && from == 0 {
		opts = append(opts, eventstore.WithStartTime(m.GetSince().AsTime()))
	}

	out := &auditv1.ListEventsResponse{}
	errFull := errors.New("page full")
	_, err := s.cfg.Events.Scan(ctx, from, func(rec eventstore.Record) error {
		if m.GetUntil() != nil && !rec.Time.Before(m.GetUntil().AsTime()) {
			return eventstore.ErrStopScan
		}
		if m.GetSince() != nil && rec.Time.Before(m.GetSince().AsTime()) {
			return nil
		}
		var page []*auditv1.Event
		for _, e := range rec.Events {
			if m.GetKey() != "" && describe.KeyName(e) != m.GetKey() {
				continue
			}
			if len(m.GetTypes()) > 0 && !slices.Contains(m.GetTypes(), describe.Type(e)) {
				continue
			}
			page = append(page, toProto(rec, e))
		}
		if len(page) == 0 {
			return nil
		}
		// A record's events stay on one page.
		if len(out.Events) > 0 && len(out.Events)+len(page) > size {
			out.NextPageToken = strconv.FormatUint(rec.Sequence, 10)
			return errFull
		}
		out.Events = append(out.Events, page...)
		if len(out.Events) >= size {
			out.NextPageToken = strconv.FormatUint(rec.Sequence+1, 10)
			return errFull
		}
		return nil
	}, opts...)
	if err != nil && !errors.Is(err, errFull) {
		return nil, s.fail(ctx, err)
	}
	return connect.NewResponse(out), nil
}

func toProto(rec eventstore.Record, e *eventv1.Event) *auditv1.Event {
	summary, details := describe.Summary(e)
	return &auditv1.Event{
		Sequence:      rec.Sequence,
		Time:          timestamppb.New(rec.Time),
		Actor:         e.GetActor(),
		Type:          describe.Type(e),
		AggregateType: rec.Aggregate.Type,
		AggregateName: rec.Aggregate.Name,
		Summary:       summary,
		Details:       details,
	}
}
