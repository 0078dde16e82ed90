// Package describe turns events into what an auditor reads: a type name, a
// one-line summary and the fields as text. It never shows a secret's hash.
package describe

import (
	"strings"
	"time"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
)

// Type is the event's type name, e.g. "KeyLinked"; "" for none.
func Type(e *eventv1.Event) string {
	switch e.GetPayload().(type) {
	case *eventv1.Event_KeyCreated:
		return "KeyCreated"
	case *eventv1.Event_KeyUpdated:
		return "KeyUpdated"
	case *eventv1.Event_KeyExpiryChanged:
		return "KeyExpiryChanged"
	case *eventv1.Event_KeyDeleted:
		return "KeyDeleted"
	case *eventv1.Event_KeyRotated:
		return "KeyRotated"
	case *eventv1.Event_DeploymentCreated:
		return "DeploymentCreated"
	case *eventv1.Event_DeploymentStatusChanged:
		return "DeploymentStatusChanged"
	case *eventv1.Event_DeploymentAuthEnabled:
		return "DeploymentAuthEnabled"
	case *eventv1.Event_DeploymentAuthDisabled:
		return "DeploymentAuthDisabled"
	case *eventv1.Event_KeyLinked:
		return "KeyLinked"
	case *eventv1.Event_KeyUnlinked:
		return "KeyUnlinked"
	case *eventv1.Event_DeploymentDeleted:
		return "DeploymentDeleted"
	}
	return ""
}

// Types are every event type name, for validating filters.
var Types = []string{
	"KeyCreated", "KeyUpdated", "KeyExpiryChanged", "KeyDeleted", "KeyRotated", "DeploymentCreated", "DeploymentStatusChanged",
	"DeploymentAuthEnabled", "DeploymentAuthDisabled", "KeyLinked", "KeyUnlinked", "DeploymentDeleted",
}

// KeyName is the key an event is about — its own events and its links —
// or "".
func KeyName(e *eventv1.Event) string {
	switch p := e.GetPayload().(type) {
	case *eventv1.Event_KeyCreated, *eventv1.Event_KeyUpdated, *eventv1.Event_KeyExpiryChanged, *eventv1.Event_KeyDeleted, *eventv1.Event_KeyRotated:
		return e.GetAggregate().GetName()
	case *eventv1.Event_KeyLinked:
		return p.KeyLinked.GetKeyName()
	case *eventv1.Event_KeyUnlinked:
		return p.KeyUnlinked.GetKeyName()
	}
	return ""
}

// Summary and Details describe an event.
func Summary(e *eventv1.Event) (string, map[string]string) {
	name := e.GetAggregate().GetName()
	switch p := e.GetPayload().(type) {
	case *eventv1.Event_KeyCreated:
		c := p.KeyCreated
		d := map[string]string{"key_id": c.GetKeyId(), "name": c.GetName(), "hint": c.GetHint(), "description": c.GetDescription(), "expires_at": "never"}
		s := "created key " + name
		if c.GetExpiresAt() != nil {
			d["expires_at"] = c.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
			s += " expiring " + d["expires_at"]
		} else {
			s += " (never expires)"
		}
		return s, d
	case *eventv1.Event_KeyUpdated:
		return "changed the description of key " + name, map[string]string{"key_id": p.KeyUpdated.GetKeyId(), "description": p.KeyUpdated.GetDescription()}
	case *eventv1.Event_KeyExpiryChanged:
		x := p.KeyExpiryChanged
		if x.GetExpiresAt() == nil {
			return "removed the expiry of key " + name + " (never expires)", map[string]string{"key_id": x.GetKeyId(), "expires_at": "never"}
		}
		at := x.GetExpiresAt().AsTime().UTC().Format(time.RFC3339)
		return "changed the expiry of key " + name + " to " + at, map[string]string{"key_id": x.GetKeyId(), "expires_at": at}
	case *eventv1.Event_KeyDeleted:
		return "deleted key " + name, map[string]string{"key_id": p.KeyDeleted.GetKeyId()}
	case *eventv1.Event_KeyRotated:
		c := p.KeyRotated
		until := c.GetOldSecretNotAfter().AsTime().UTC()
		d := map[string]string{
			"key_id": c.GetKeyId(), "hint": c.GetHint(), "previous_hint": c.GetPreviousHint(),
			"old_secret_not_after": until.Format(time.RFC3339),
		}
		s := "rotated key " + name + ": new secret " + c.GetHint() + ", old secret " + c.GetPreviousHint()
		if e.GetTime() != nil && !until.After(e.GetTime().AsTime()) {
			s += " stopped at once"
		} else {
			s += " works until " + d["old_secret_not_after"]
		}
		return s, d
	case *eventv1.Event_DeploymentCreated:
		c := p.DeploymentCreated
		regions := strings.Join(c.GetRegions(), ",")
		if regions == "" {
			regions = "all"
		}
		return "created deployment " + name + " (model " + c.GetModel() + ", upstream " + c.GetUpstreamUrl() + ")",
			map[string]string{"deployment_id": c.GetDeploymentId(), "model": c.GetModel(), "upstream_url": c.GetUpstreamUrl(), "regions": regions}
	case *eventv1.Event_DeploymentStatusChanged:
		c := p.DeploymentStatusChanged
		status := strings.TrimPrefix(c.GetStatus().String(), "DEPLOYMENT_STATUS_")
		s := "deployment " + name + " is " + status
		if c.GetReason() != "" {
			s += ": " + c.GetReason()
		}
		return s, map[string]string{"deployment_id": c.GetDeploymentId(), "status": status, "reason": c.GetReason()}
	case *eventv1.Event_DeploymentAuthEnabled:
		return "enabled API-key auth on deployment " + name, map[string]string{"deployment_id": p.DeploymentAuthEnabled.GetDeploymentId()}
	case *eventv1.Event_DeploymentAuthDisabled:
		return "disabled API-key auth on deployment " + name, map[string]string{"deployment_id": p.DeploymentAuthDisabled.GetDeploymentId()}
	case *eventv1.Event_KeyLinked:
		c := p.KeyLinked
		return "linked key " + c.GetKeyName() + " to deployment " + name,
			map[string]string{"deployment_id": c.GetDeploymentId(), "key_id": c.GetKeyId(), "key": c.GetKeyName()}
	case *eventv1.Event_KeyUnlinked:
		c := p.KeyUnlinked
		return "unlinked key " + c.GetKeyName() + " from deployment " + name,
			map[string]string{"deployment_id": c.GetDeploymentId(), "key_id": c.GetKeyId(), "key": c.GetKeyName()}
	case *eventv1.Event_DeploymentDeleted:
		return "deleted deployment " + name, map[string]string{"deployment_id": p.DeploymentDeleted.GetDeploymentId()}
	}
	return "unknown event", nil
}
