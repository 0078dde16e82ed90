package authmap_test

import (
	"hash/crc32"
	"math/rand/v2"
	"strconv"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventv1 "github.com/infergate/infergate/gen/infergate/event/v1"
	"github.com/infergate/infergate/services/internal/apikey"
)

// The builders make events by hand, the way the services' aggregates do,
// so tests can also make what the services never would (a record spanning
// two aggregates, a link to a deleted key).

func event(project string, typ eventv1.AggregateType, name string) *eventv1.Event {
	return &eventv1.Event{
		Id:        "ev",
		Time:      timestamppb.New(time.Unix(1_700_000_000, 0)),
		Actor:     "test",
		Project:   project,
		Aggregate: &eventv1.Aggregate{Type: typ, Name: name},
	}
}

func keyEvent(project, name string) *eventv1.Event {
	return event(project, eventv1.AggregateType_AGGREGATE_TYPE_KEY, name)
}

func depEvent(project, name string) *eventv1.Event {
	return event(project, eventv1.AggregateType_AGGREGATE_TYPE_DEPLOYMENT, name)
}

func keyCreated(project, name, id, secret string, expires time.Time) *eventv1.Event {
	e := keyEvent(project, name)
	h := apikey.Sum(secret)
	c := &eventv1.KeyCreated{KeyId: id, Name: name, SecretSha256: h[:], Hint: apikey.Hint(secret)}
	if !expires.IsZero() {
		c.ExpiresAt = timestamppb.New(expires)
	}
	e.Payload = &eventv1.Event_KeyCreated{KeyCreated: c}
	return e
}

func keyDeleted(project, name, id string) *eventv1.Event {
	e := keyEvent(project, name)
	e.Payload = &eventv1.Event_KeyDeleted{KeyDeleted: &eventv1.KeyDeleted{KeyId: id}}
	return e
}

// keyRotated gives key project/name (id) the secret secret; the one it
// replaces stops at notAfter.
func keyRotated(project, name, id, secret string, notAfter time.Time) *eventv1.Event {
	e := keyEvent(project, name)
	h := apikey.Sum(secret)
	e.Payload = &eventv1.Event_KeyRotated{KeyRotated: &eventv1.KeyRotated{
		KeyId: id, SecretSha256: h[:], Hint: apikey.Hint(secret), OldSecretNotAfter: timestamppb.New(notAfter),
	}}
	return e
}

func depCreated(project, name, id, upstream string, regions ...string) *eventv1.Event {
	e := depEvent(project, name)
	e.Payload = &eventv1.Event_DeploymentCreated{DeploymentCreated: &eventv1.DeploymentCreated{
		DeploymentId: id, Name: name, Model: "m", UpstreamUrl: upstream, Regions: regions,
	}}
	return e
}

func depStatus(project, name, id string, s eventv1.DeploymentStatus) *eventv1.Event {
	e := depEvent(project, name)
	e.Payload = &eventv1.Event_DeploymentStatusChanged{DeploymentStatusChanged: &eventv1.DeploymentStatusChanged{DeploymentId: id, Status: s}}
	return e
}

func deployed(project, name, id string) *eventv1.Event {
	return depStatus(project, name, id, eventv1.DeploymentStatus_DEPLOYMENT_STATUS_DEPLOYED)
}

func authEnabled(project, name, id string) *eventv1.Event {
	e := depEvent(project, name)
	e.Payload = &eventv1.Event_DeploymentAuthEnabled{DeploymentAuthEnabled: &eventv1.DeploymentAuthEnabled{DeploymentId: id}}
	return e
}

func authDisabled(project, name, id string) *eventv1.Event {
	e := depEvent(project, name)
	e.Payload = &eventv1.Event_DeploymentAuthDisabled{DeploymentAuthDisabled: &eventv1.DeploymentAuthDisabled{DeploymentId: id}}
	return e
}

func linked(project, dep, depID, key, keyID string) *eventv1.Event {
	e := depEvent(project, dep)
	e.Payload = &eventv1.Event_KeyLinked{KeyLinked: &eventv1.KeyLinked{DeploymentId: depID, KeyId: keyID, KeyName: key}}
	return e
}

func unlinked(project, dep, depID, key, keyID string) *eventv1.Event {
	e := depEvent(project, dep)
	e.Payload = &eventv1.Event_KeyUnlinked{KeyUnlinked: &eventv1.KeyUnlinked{DeploymentId: depID, KeyId: keyID, KeyName: key}}
	return e
}

func depDeleted(project, name, id string) *eventv1.Event {
	e := depEvent(project, name)
	e.Payload = &eventv1.Event_DeploymentDeleted{DeploymentDeleted: &eventv1.DeploymentDeleted{DeploymentId: id}}
	return e
}

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// fastSecret makes a well-formed secret from r, much faster than
// apikey.Generate (which is built for randomness, not for a million keys
// in a benchmark). Same format: prefix, 43 base62 characters, 6 base62
// characters of CRC32.
func fastSecret(r *rand.Rand) string {
	buf := make([]byte, 0, apikey.Len)
	buf = append(buf, apikey.Prefix...)
	for range 43 {
		buf = append(buf, base62[r.IntN(62)])
	}
	sum := uint64(crc32.ChecksumIEEE(buf))
	var cs [6]byte
	for i := 5; i >= 0; i-- {
		cs[i] = base62[sum%62]
		sum /= 62
	}
	return string(append(buf, cs[:]...))
}

func itoa(i int) string { return strconv.Itoa(i) }

func keyExpiryChanged(project, name, id string, expires time.Time) *eventv1.Event {
	e := keyEvent(project, name)
	x := &eventv1.KeyExpiryChanged{KeyId: id}
	if !expires.IsZero() {
		x.ExpiresAt = timestamppb.New(expires)
	}
	e.Payload = &eventv1.Event_KeyExpiryChanged{KeyExpiryChanged: x}
	return e
}
