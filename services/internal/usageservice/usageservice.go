// Package usageservice is infergate.usage.v1.UsageService: it answers how
// keys and deployments were used from the usage projection
// (readmodel.UsageStore), served by the control plane next to the other
// services (docs/usage.md).
package usageservice

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/gen/infergate/usage/v1/usagev1connect"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/rpcerr"
)

// Bounds of a query.
const (
	// DefaultRange is the time range when a call gives no since.
	DefaultRange = 24 * time.Hour
	// MaxRange is the longest range a call may ask for.
	MaxRange = 366 * 24 * time.Hour
	// maxBuckets is the most buckets a series may have.
	maxBuckets = 1440
	// autoBuckets is about how many buckets a series has when the call
	// gives no step.
	autoBuckets = 60
)

// Config is what the service needs.
type Config struct {
	Usage readmodel.UsageStore
	Log   *slog.Logger
	Now   func() time.Time
}

// Server implements UsageService.
type Server struct {
	cfg Config
}

var _ usagev1connect.UsageServiceHandler = (*Server)(nil)

// New returns the server.
func New(cfg Config) (*Server, error) {
	if cfg.Usage == nil {
		return nil, errors.New("usageservice: Usage is required")
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{cfg: cfg}, nil
}

// NewHandler returns the Connect/gRPC/gRPC-Web handler and its path.
func NewHandler(cfg Config, opts ...connect.HandlerOption) (string, http.Handler, error) {
	s, err := New(cfg)
	if err != nil {
		return "", nil, err
	}
	path, h := usagev1connect.NewUsageServiceHandler(s, opts...)
	return path, h, nil
}

// GetKeyUsage implements UsageService. A key that was never used (or
// never existed) has no usage: zeros, not not_found, since usage outlives
// deleted keys.
func (s *Server) GetKeyUsage(ctx context.Context, req *connect.Request[usagev1.GetKeyUsageRequest]) (*connect.Response[usagev1.GetKeyUsageResponse], error) {
	m := req.Msg
	errs := []error{aggregate.ValidateProject("project", m.GetProject()), aggregate.ValidateKeyName("name", m.GetName())}
	if m.GetDeployment() != "" {
		errs = append(errs, aggregate.ValidateDeploymentName("deployment", m.GetDeployment()))
	}
	f, err := s.filter(m.GetProject(), m.GetSince(), m.GetUntil(), m.GetStepSeconds(), errs)
	if err != nil {
		return nil, rpcerr.From(ctx, s.cfg.Log, err)
	}
	f.Key, f.Deployment, f.By = m.GetName(), m.GetDeployment(), readmodel.ByDeployment
	u, err := s.usage(ctx, f)
	if err != nil {
		return nil, rpcerr.From(ctx, s.cfg.Log, err)
	}
	return connect.NewResponse(&usagev1.GetKeyUsageResponse{Usage: toUsage(u), Deployments: toParts(u.Parts)}), nil
}

// GetDeploymentUsage implements UsageService.
func (s *Server) GetDeploymentUsage(ctx context.Context, req *connect.Request[usagev1.GetDeploymentUsageRequest]) (*connect.Response[usagev1.GetDeploymentUsageResponse], error) {
	m := req.Msg
	errs := []error{aggregate.ValidateProject("project", m.GetProject()), aggregate.ValidateDeploymentName("name", m.GetName())}
	if m.GetKey() != "" {
		errs = append(errs, aggregate.ValidateKeyName("key", m.GetKey()))
	}
	f, err := s.filter(m.GetProject(), m.GetSince(), m.GetUntil(), m.GetStepSeconds(), errs)
	if err != nil {
		return nil, rpcerr.From(ctx, s.cfg.Log, err)
	}
	f.Key, f.Deployment, f.By = m.GetKey(), m.GetName(), readmodel.ByKey
	u, err := s.usage(ctx, f)
	if err != nil {
		return nil, rpcerr.From(ctx, s.cfg.Log, err)
	}
	return connect.NewResponse(&usagev1.GetDeploymentUsageResponse{Usage: toUsage(u), Keys: toParts(u.Parts)}), nil
}

// ListLastUsed implements UsageService.
func (s *Server) ListLastUsed(ctx context.Context, req *connect.Request[usagev1.ListLastUsedRequest]) (*connect.Response[usagev1.ListLastUsedResponse], error) {
	if err := aggregate.ValidateProject("project", req.Msg.GetProject()); err != nil {
		return nil, rpcerr.From(ctx, s.cfg.Log, err)
	}
	last, err := s.cfg.Usage.LastUsed(ctx, req.Msg.GetProject())
	if err != nil {
		return nil, rpcerr.From(ctx, s.cfg.Log, err)
	}
	keys, deps := map[string]time.Time{}, map[string]time.Time{}
	for _, l := range last {
		if l.Key != "" && l.At.After(keys[l.Key]) {
			keys[l.Key] = l.At
		}
		if l.At.After(deps[l.Deployment]) {
			deps[l.Deployment] = l.At
		}
	}
	out := &usagev1.ListLastUsedResponse{}
	for name, at := range keys {
		out.Keys = append(out.Keys, &usagev1.LastUsed{Name: name, LastUsed: timestamppb.New(at)})
	}
	for name, at := range deps {
		out.Deployments = append(out.Deployments, &usagev1.LastUsed{Name: name, LastUsed: timestamppb.New(at)})
	}
	return connect.NewResponse(out), nil
}

// filter checks the time range and step and joins every problem.
func (s *Server) filter(project string, since, until *timestamppb.Timestamp, stepSeconds int64, errs []error) (readmodel.UsageFilter, error) {
	now := s.cfg.Now()
	f := readmodel.UsageFilter{Project: project, Until: now, Since: now.Add(-DefaultRange)}
	if until != nil {
		if err := until.CheckValid(); err != nil {
			errs = append(errs, fmt.Errorf("%w: until: %w", aggregate.ErrInvalid, err))
		}
		f.Until = until.AsTime()
	}
	if since != nil {
		if err := since.CheckValid(); err != nil {
			errs = append(errs, fmt.Errorf("%w: since: %w", aggregate.ErrInvalid, err))
		}
		f.Since = since.AsTime()
	}
	f.Since = f.Since.Truncate(time.Minute)
	rng := f.Until.Sub(f.Since)
	switch {
	case rng <= 0:
		errs = append(errs, fmt.Errorf("%w: since must be before until", aggregate.ErrInvalid))
	case rng > MaxRange:
		errs = append(errs, fmt.Errorf("%w: since..until spans %s, more than %s", aggregate.ErrInvalid, rng.Round(time.Hour), MaxRange))
	}
	switch {
	case stepSeconds < 0 || stepSeconds%60 != 0:
		errs = append(errs, fmt.Errorf("%w: step_seconds %d is not a multiple of 60", aggregate.ErrInvalid, stepSeconds))
	case stepSeconds == 0 && rng > 0:
		f.Step = max(time.Minute, (rng/autoBuckets+time.Minute-1)/time.Minute*time.Minute)
	default:
		f.Step = time.Duration(stepSeconds) * time.Second
		if rng > 0 && rng/f.Step > maxBuckets {
			errs = append(errs, fmt.Errorf("%w: step_seconds %d gives more than %d buckets", aggregate.ErrInvalid, stepSeconds, maxBuckets))
		}
	}
	return f, errors.Join(errs...)
}

func (s *Server) usage(ctx context.Context, f readmodel.UsageFilter) (readmodel.Usage, error) {
	rows, err := s.cfg.Usage.Usage(ctx, f)
	if err != nil {
		return readmodel.Usage{}, err
	}
	last, err := s.cfg.Usage.LastUsed(ctx, f.Project)
	if err != nil {
		return readmodel.Usage{}, err
	}
	return readmodel.Summarize(f, rows, last), nil
}

func toCounts(c readmodel.Counts) *usagev1.Counts {
	return &usagev1.Counts{Ok: c.OK, ClientErrors: c.ClientErrors, ServerErrors: c.ServerErrors, Refused: c.Refused,
		PromptTokens: c.PromptTokens, CompletionTokens: c.CompletionTokens}
}

func stamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func toUsage(u readmodel.Usage) *usagev1.Usage {
	out := &usagev1.Usage{Total: toCounts(u.Total), LastUsed: stamp(u.LastUsed)}
	for _, b := range u.Series {
		out.Series = append(out.Series, &usagev1.Bucket{Start: timestamppb.New(b.Start), Counts: toCounts(b.Counts)})
	}
	return out
}

func toParts(parts []readmodel.Part) []*usagev1.Breakdown {
	out := make([]*usagev1.Breakdown, 0, len(parts))
	for _, p := range parts {
		out = append(out, &usagev1.Breakdown{Name: p.Name, Counts: toCounts(p.Counts), LastUsed: stamp(p.LastUsed)})
	}
	return out
}
