package readmodel

import (
	"fmt"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
)

// The helpers below are shared by every Store, so all of them read an
// event the same way.

// CheckPage refuses a page without a positive limit.
func CheckPage(p Page) error {
	if p.Limit <= 0 {
		return fmt.Errorf("readmodel: page limit %d is not positive", p.Limit)
	}
	return nil
}

// ProjectOf is the event's project, or the record's when the event has
// none.
func ProjectOf(rec eventstore.Record, ev *eventv1.Event) string {
	if p := ev.GetProject(); p != "" {
		return p
	}
	return rec.Aggregate.Project
}

// NameOf is the name the payload gives, else the event's aggregate name,
// else the record's.
func NameOf(rec eventstore.Record, ev *eventv1.Event, payloadName string) string {
	switch {
	case payloadName != "":
		return payloadName
	case ev.GetAggregate().GetName() != "":
		return ev.GetAggregate().GetName()
	default:
		return rec.Aggregate.Name
	}
}

// EventTime is the event's time, or the record's when the event has none.
func EventTime(rec eventstore.Record, ev *eventv1.Event) time.Time {
	if ev.GetTime() != nil {
		return NormalTime(ev.GetTime().AsTime())
	}
	return NormalTime(rec.Time)
}

// NormalTime is t as every store keeps it: UTC, to the microsecond
// (PostgreSQL's precision), so both stores answer alike.
func NormalTime(t time.Time) time.Time {
	return t.Truncate(time.Microsecond).UTC()
}

func StatusOf(s eventv1.DeploymentStatus) (string, bool) {
	switch s {
	case eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYING:
		return StatusDeploying, true
	case eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED:
		return StatusDeployed, true
	case eventv1.DeploymentStatus_DEPLOYMENT_STATUS_FAILED:
		return StatusFailed, true
	}
	return "", false
}
