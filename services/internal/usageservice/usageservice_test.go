package usageservice_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/usageservice"
)

func TestUsageService(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 12, 0, 30, 0, time.UTC)
	store := readmodel.NewUsageMemory()
	data, _ := proto.Marshal(&usagev1.Flush{Gateway: "gw", Region: "eu", Boot: "b", Sequence: 1, Rows: []*usagev1.Row{
		{Project: "p", Deployment: "llama", Key: "ci-runner", Minute: now.Add(-time.Hour).Truncate(time.Minute).Unix(),
			LastUsedUnixNano: now.Add(-time.Hour).UnixNano(), Counts: &usagev1.Counts{Ok: 2, PromptTokens: 5}},
		{Project: "p", Deployment: "llama", Key: "", Minute: now.Add(-time.Minute).Truncate(time.Minute).Unix(),
			LastUsedUnixNano: now.Add(-time.Minute).UnixNano(), Counts: &usagev1.Counts{Refused: 1}},
	}})
	if err := store.Apply(t.Context(), eventstore.Record{Sequence: 1, Data: data}); err != nil {
		t.Fatal(err)
	}
	srv, err := usageservice.New(usageservice.Config{Usage: store, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	k, err := srv.GetKeyUsage(ctx, connect.NewRequest(&usagev1.GetKeyUsageRequest{Project: "p", Name: "ci-runner"}))
	if err != nil {
		t.Fatal(err)
	}
	if u := k.Msg.GetUsage(); u.GetTotal().GetOk() != 2 || u.GetTotal().GetPromptTokens() != 5 || len(u.GetSeries()) != 1 ||
		len(k.Msg.GetDeployments()) != 1 || k.Msg.GetDeployments()[0].GetName() != "llama" {
		t.Errorf("GetKeyUsage: %v", k.Msg)
	}
	d, err := srv.GetDeploymentUsage(ctx, connect.NewRequest(&usagev1.GetDeploymentUsageRequest{Project: "p", Name: "llama"}))
	if err != nil {
		t.Fatal(err)
	}
	if u := d.Msg.GetUsage(); u.GetTotal().GetOk() != 2 || u.GetTotal().GetRefused() != 1 || len(d.Msg.GetKeys()) != 2 ||
		!u.GetLastUsed().AsTime().Equal(now.Add(-time.Minute)) {
		t.Errorf("GetDeploymentUsage: %v", d.Msg)
	}
	l, err := srv.ListLastUsed(ctx, connect.NewRequest(&usagev1.ListLastUsedRequest{Project: "p"}))
	if err != nil || len(l.Msg.GetKeys()) != 1 || len(l.Msg.GetDeployments()) != 1 ||
		!l.Msg.GetDeployments()[0].GetLastUsed().AsTime().Equal(now.Add(-time.Minute)) {
		t.Errorf("ListLastUsed: %v, %v", l, err)
	}
	// A key never used: zeros, not an error.
	if k, err := srv.GetKeyUsage(ctx, connect.NewRequest(&usagev1.GetKeyUsageRequest{Project: "p", Name: "never-used"})); err != nil ||
		k.Msg.GetUsage().GetTotal().GetOk() != 0 || k.Msg.GetUsage().GetLastUsed() != nil {
		t.Errorf("unused key: %v, %v", k, err)
	}

	bad := []struct {
		name  string
		req   *usagev1.GetKeyUsageRequest
		field string
	}{
		{"project", &usagev1.GetKeyUsageRequest{Project: "P!", Name: "ci-runner"}, "project"},
		{"name", &usagev1.GetKeyUsageRequest{Project: "p", Name: "x"}, "name"},
		{"deployment", &usagev1.GetKeyUsageRequest{Project: "p", Name: "ci-runner", Deployment: "Bad"}, "deployment"},
		{"range", &usagev1.GetKeyUsageRequest{Project: "p", Name: "ci-runner", Since: timestamppb.New(now), Until: timestamppb.New(now.Add(-time.Hour))}, "since"},
		{"too long", &usagev1.GetKeyUsageRequest{Project: "p", Name: "ci-runner", Since: timestamppb.New(now.Add(-400 * 24 * time.Hour))}, "since..until"},
		{"step", &usagev1.GetKeyUsageRequest{Project: "p", Name: "ci-runner", StepSeconds: 30}, "step_seconds"},
		{"buckets", &usagev1.GetKeyUsageRequest{Project: "p", Name: "ci-runner", Since: timestamppb.New(now.Add(-30 * 24 * time.Hour)), StepSeconds: 60}, "step_seconds"},
	}
	for _, b := range bad {
		_, err := srv.GetKeyUsage(ctx, connect.NewRequest(b.req))
		var ce *connect.Error
		if !errors.As(err, &ce) || ce.Code() != connect.CodeInvalidArgument || !strings.Contains(ce.Message(), b.field) {
			t.Errorf("%s: %v, want invalid_argument naming %s", b.name, err, b.field)
		}
	}
}
