package auditservice

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/types/known/timestamppb"

	auditv1 "github.com/infergate/infergate/gen/infergate/audit/v1"
	"github.com/infergate/infergate/services/audit/internal/history"
	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/apikey"
	"github.com/infergate/infergate/services/internal/authmap"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// replay folds the project's events stored at or before at into a fresh
// auth map — the gateway's own code, so the audit cannot disagree with
// what a gateway decided.
func (s *Server) replay(ctx context.Context, project string, at time.Time) (*authmap.Map, uint64, error) {
	if s.cfg.History != nil {
		return s.cfg.History.StateAt(ctx, project, at)
	}
	return history.Replay(ctx, s.cfg.Events, project, at)
}

func (s *Server) at(ts *timestamppb.Timestamp) (time.Time, error) {
	if ts == nil {
		return s.cfg.Now(), nil
	}
	if err := ts.CheckValid(); err != nil {
		return time.Time{}, invalid("at", "is not a valid time")
	}
	return ts.AsTime(), nil
}

// CheckAccess answers whether a key would have been let in to a deployment
// at a moment, and why.
func (s *Server) CheckAccess(ctx context.Context, req *connect.Request[auditv1.CheckAccessRequest]) (*connect.Response[auditv1.CheckAccessResponse], error) {
	m := req.Msg
	at, err := s.at(m.GetAt())
	if err = errors.Join(err,
		aggregate.ValidateProject("project", m.GetProject()),
		aggregate.ValidateDeploymentName("deployment", m.GetDeployment()),
		aggregate.ValidateKeyName("key", m.GetKey()),
	); err != nil {
		return nil, s.fail(ctx, err)
	}
	if len(m.GetSecretHint()) > 64 {
		return nil, s.fail(ctx, invalid("secret_hint", "is longer than a hint"))
	}
	state, seq, err := s.replay(ctx, m.GetProject(), at)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	var reason authmap.Reason
	if m.GetSecretHint() == "" {
		reason = state.CheckKey(m.GetProject(), m.GetDeployment(), m.GetKey(), at)
	} else {
		sum, ok, err := s.secretByHint(ctx, m.GetProject(), m.GetKey(), m.GetSecretHint(), seq, at)
		switch {
		case err != nil:
			return nil, s.fail(ctx, err)
		case !ok:
			reason = authmap.ReasonUnknownKey
		default:
			reason = state.CheckHash(m.GetProject(), m.GetDeployment(), sum, at)
		}
	}
	return connect.NewResponse(&auditv1.CheckAccessResponse{
		Allowed:  reason.Allowed(),
		Reason:   reason.String(),
		Sequence: seq,
	}), nil
}

// secretByHint finds the hash of the key's secret — current or replaced
// by a rotation — whose hint is hint, as the key stood at the state's
// sequence seq (no later than at). The auth map keeps secrets by hash
// only, so the hint is looked up in the key's own events.
func (s *Server) secretByHint(ctx context.Context, project, name, hint string, seq uint64, at time.Time) (apikey.Hash, bool, error) {
	records, _, err := s.cfg.Events.Load(ctx, eventstore.Aggregate{Project: project, Type: eventstore.TypeKey, Name: name})
	if err != nil {
		return apikey.Hash{}, false, err
	}
	var k aggregate.Key
	for _, rec := range records {
		if rec.Sequence > seq || rec.Time.After(at) {
			break
		}
		for _, e := range rec.Events {
			k.Apply(e)
		}
	}
	if k.ID == "" {
		return apikey.Hash{}, false, nil
	}
	sum, ok := k.SecretByHint(hint)
	return sum, ok, nil
}

// GetStateAt returns the project's keys and deployments, with their links,
// as they stood at a moment.
func (s *Server) GetStateAt(ctx context.Context, req *connect.Request[auditv1.GetStateAtRequest]) (*connect.Response[auditv1.GetStateAtResponse], error) {
	m := req.Msg
	at, err := s.at(m.GetAt())
	if err = errors.Join(err, aggregate.ValidateProject("project", m.GetProject())); err != nil {
		return nil, s.fail(ctx, err)
	}
	state, seq, err := s.replay(ctx, m.GetProject(), at)
	if err != nil {
		return nil, s.fail(ctx, err)
	}
	snap := state.Snapshot()
	out := &auditv1.GetStateAtResponse{Sequence: seq}
	linkedTo := map[string][]string{} // key id → deployment names
	for _, d := range snap.Deployments {
		if d.Project != m.GetProject() {
			continue
		}
		ds := &auditv1.DeploymentState{
			Name:        d.Name,
			Id:          d.ID,
			AuthEnabled: d.AuthEnabled,
			Status:      strings.TrimPrefix(d.Status.String(), "DEPLOYMENT_STATUS_"),
		}
		for _, k := range d.Keys {
			ds.ApiKeys = append(ds.ApiKeys, k.Name)
			linkedTo[k.ID] = append(linkedTo[k.ID], d.Name)
		}
		out.Deployments = append(out.Deployments, ds)
	}
	for _, k := range snap.Keys {
		if k.Project != m.GetProject() || k.Deleted {
			continue
		}
		ks := &auditv1.KeyState{Name: k.Name, Id: k.ID, DeploymentNames: linkedTo[k.ID]}
		slices.Sort(ks.DeploymentNames)
		if !k.ExpiresAt.IsZero() {
			ks.ExpiresAt = timestamppb.New(k.ExpiresAt)
			ks.Expired = !k.ExpiresAt.After(at)
		}
		out.Keys = append(out.Keys, ks)
	}
	return connect.NewResponse(out), nil
}
