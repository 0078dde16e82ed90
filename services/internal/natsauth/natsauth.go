// Package natsauth defines the NATS identities infergate's processes
// connect with and the least privilege each one has (SPEC §7, issue 11):
//
//   - the control plane appends events, manages the event stream, writes
//     the snapshot bucket and hears the gateways' receipts;
//   - a gateway reads the event stream and the snapshot bucket and
//     publishes its receipts on its own subject only;
//   - audit reads the event stream only;
//   - a region's leaf server forwards its gateways' receipts to the hub
//     and feeds the region's mirrors (of the event stream and of the
//     snapshot bucket) from their durable consumers on the hub;
//   - a region's admin creates those mirrors on the region's leaf server
//     (`infergate admin stream create-mirror`), nothing else.
//
// Identities are NATS nkey users: the server holds only public keys and
// the permissions below; each process holds its own seed file. The same
// permissions are written out in deploy/nats/nats-server.conf, and a test
// holds the two together (docs/security.md says why static nkey users).
package natsauth

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/receipts"
	"github.com/infergate/infergate/services/internal/snapshots"
	"github.com/infergate/infergate/services/internal/usage"
)

// EventStream is the JetStream stream the permissions are about.
const EventStream = "INFERGATE_EVENTS"

// UsageStream is the gateways' usage stream (eventstore.UsageStream).
const UsageStream = "INFERGATE_USAGE"

// eventSubjects are the event stream's subjects.
const eventSubjects = "infergate.events.>"

// hubDomain is the hub cluster's JetStream domain (deploy/nats), which a
// region's leaf server reaches as $JS.hub.API.
const hubDomain = "hub"

// Role is what a process does, and so what it may do on NATS.
type Role string

// The roles.
const (
	ControlPlane Role = "control-plane"
	Gateway      Role = "gateway"
	Audit        Role = "audit"
	// Leaf is a region's leaf server connecting to the hub (deploy/nats).
	Leaf Role = "leaf"
	// RegionAdmin creates the region's mirrors on its leaf server.
	RegionAdmin Role = "region-admin"
)

// ErrInvalid wraps every problem with an identity.
var ErrInvalid = errors.New("natsauth: invalid identity")

// Identity is one NATS user: a role and, for a gateway, its region and
// id (which give it its own receipt subject), for a leaf, its region.
type Identity struct {
	Role   Role
	Region string
	ID     string
}

// GatewayIdentity is the identity of gateway id in region.
func GatewayIdentity(region, id string) Identity {
	return Identity{Role: Gateway, Region: region, ID: id}
}

// Validate reports every problem at once.
func (i Identity) Validate() error {
	var errs []error
	token := func(what, s string) {
		if s == "" || strings.ContainsAny(s, ".*> \t\r\n/\\") {
			errs = append(errs, fmt.Errorf("%w: %s %q is not a NATS subject token", ErrInvalid, what, s))
		}
	}
	switch i.Role {
	case ControlPlane, Audit:
	case Gateway:
		token("region", i.Region)
		token("id", i.ID)
	case Leaf, RegionAdmin:
		token("region", i.Region)
	default:
		errs = append(errs, fmt.Errorf("%w: role %q", ErrInvalid, i.Role))
	}
	return errors.Join(errs...)
}

// Name names the identity: its seed file's base name and its inbox.
func (i Identity) Name() string {
	switch i.Role {
	case Gateway:
		return string(i.Role) + "." + i.Region + "." + i.ID
	case Leaf, RegionAdmin:
		return string(i.Role) + "." + i.Region
	}
	return string(i.Role)
}

// InboxPrefix is where the identity's replies arrive; each identity may
// subscribe to its own inbox only, so no process reads another's replies.
func (i Identity) InboxPrefix() string { return "_INBOX." + i.Name() }

// ReceiptSubject is the one subject a gateway may publish on.
func (i Identity) ReceiptSubject() string {
	return receipts.SubjectPrefix + "." + i.Region + "." + i.ID
}

// UsageSubject is the one usage subject a gateway may publish on.
func (i Identity) UsageSubject() string { return usage.Subject(i.Region, i.ID) }

// readStream is what reading stream s takes through the JetStream API as
// nats.go calls it: stream info; an ordered (pull) consumer, created,
// pulled from, looked at and deleted on reset; and single messages by
// direct get or, without AllowDirect, by the API.
func readStream(api, s string) []string {
	return []string{
		api + ".STREAM.INFO." + s,
		api + ".CONSUMER.CREATE." + s, api + ".CONSUMER.CREATE." + s + ".>",
		api + ".CONSUMER.MSG.NEXT." + s + ".>",
		api + ".CONSUMER.INFO." + s + ".>",
		api + ".CONSUMER.DELETE." + s + ".>",
		api + ".DIRECT.GET." + s, api + ".DIRECT.GET." + s + ".>",
		api + ".STREAM.MSG.GET." + s,
	}
}

// readObjects is what reading the snapshot bucket takes: stream info and
// direct gets only. No consumers: a consumer may deliver to any subject
// (its deliver subject is not checked against its creator's permissions),
// and one on the bucket could push snapshot chunks into the event stream.
// snapshots reads objects by direct get for this reason.
func readObjects(bucket string) []string {
	s := "OBJ_" + bucket
	return []string{
		"$JS.API.STREAM.INFO." + s,
		"$JS.API.DIRECT.GET." + s, "$JS.API.DIRECT.GET." + s + ".>",
	}
}

// writeObjects is what saving snapshots takes: creating the bucket,
// reading it, putting an object (its chunks and metadata on $O.<bucket>)
// and purging the chunks of the object it replaces; and what feeding the
// regions' mirrors of it takes: making their durable consumers
// (eventstore.FeedConsumer; one token, the consumer's name, after the
// stream: no filtered consumers).
func writeObjects(bucket string) []string {
	s := "OBJ_" + bucket
	return append(readObjects(bucket),
		"$JS.API.STREAM.CREATE."+s,
		"$JS.API.STREAM.PURGE."+s,
		"$O."+bucket+".>",
		"$JS.API.CONSUMER.CREATE."+s+".*",
		"$JS.API.CONSUMER.DELETE."+s+".*",
	)
}

// mirrored are the hub streams a region mirrors.
var mirrored = []string{EventStream, "OBJ_" + snapshots.DefaultBucket}

// manageStream is what creating, updating and reading stream s takes.
func manageStream(s string) []string {
	return append(readStream("$JS.API", s),
		"$JS.API.STREAM.CREATE."+s,
		"$JS.API.STREAM.UPDATE."+s,
	)
}

// Permissions are the identity's permissions; nil for an invalid one.
// Anything not allowed is denied.
func (i Identity) Permissions() *server.Permissions {
	if i.Validate() != nil {
		return nil
	}
	inbox := i.InboxPrefix() + ".>"
	// Followers hear JetStream's advisories about the event stream (its
	// deletion, creation, update), to notice a new life of it at once.
	advisories := "$JS.EVENT.ADVISORY.STREAM.*." + EventStream
	switch i.Role {
	case ControlPlane:
		pub := append([]string{eventSubjects}, manageStream(EventStream)...)
		pub = append(pub, writeObjects(snapshots.DefaultBucket)...)
		// The usage stream: created and updated as the event stream is
		// (by its one owner), read by the usage projection; never
		// published to (only gateways count usage).
		pub = append(pub, manageStream(UsageStream)...)
		return perms(pub, []string{inbox, advisories, "$JS.EVENT.ADVISORY.STREAM.*." + UsageStream, receipts.SubjectPrefix + ".>"})
	case Gateway:
		pub := append(readStream("$JS.API", EventStream), readObjects(snapshots.DefaultBucket)...)
		// A region's gateway reads its mirror ($JS.API on its leaf server)
		// and checks through the hub's domain that the mirror copies the
		// hub stream's current life (eventstore.OpenMirror).
		pub = append(pub, "$JS."+hubDomain+".API.STREAM.INFO."+EventStream, i.ReceiptSubject(), i.UsageSubject())
		return perms(pub, []string{inbox, advisories})
	case Audit:
		// The audit process shares the control plane's plumbing, which
		// hears receipts: reading them is reading.
		return perms(readStream("$JS.API", EventStream), []string{inbox, advisories, receipts.SubjectPrefix + ".>"})
	case Leaf:
		// Seen from the leaf: it may send its region's receipts and usage
		// flushes and its gateways' checks of the hub stream's life; for each mirror, ask
		// the region's durable consumer on the hub to resume and answer
		// its flow control; and receive its gateways' replies, the resume
		// replies ($JSC.R) and that consumer's deliveries. It may create
		// no consumer on the hub: a consumer may deliver to any subject.
		pub := []string{"$JS." + hubDomain + ".API.STREAM.INFO." + EventStream, receipts.SubjectPrefix + "." + i.Region + ".>",
			usage.Subject(i.Region, ">")}
		sub := []string{"_INBOX." + string(Gateway) + "." + i.Region + ".>", "$JSC.R.>"}
		for _, s := range mirrored {
			f := eventstore.Feed(s, i.Region)
			pub = append(pub, "$JS."+hubDomain+".API.CONSUMER.RESET."+s+"."+f.Name, "$JS.FC."+s+".>")
			sub = append(sub, f.Deliver)
		}
		return perms(pub, sub)
	case RegionAdmin:
		// On the region's leaf server: create, inspect and replace (a
		// mirror of a previous life of the hub's stream) the region's
		// mirrors. Not update them (a mirror's source cannot change),
		// purge them, or read them through consumers.
		var pub []string
		for _, s := range mirrored {
			pub = append(pub, "$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.CREATE."+s, "$JS.API.STREAM.DELETE."+s)
		}
		return perms(pub, []string{inbox})
	}
	return nil
}

func perms(pub, sub []string) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: sub},
	}
}

// User is the server's side of an identity: its public key and
// permissions. A leaf may connect only as a leaf, the rest only as
// clients.
func (i Identity) User(publicKey string) *server.NkeyUser {
	types := map[string]struct{}{jwt.ConnectionTypeStandard: {}}
	if i.Role == Leaf {
		types = map[string]struct{}{jwt.ConnectionTypeLeafnode: {}}
	}
	return &server.NkeyUser{Nkey: publicKey, Permissions: i.Permissions(), AllowedConnectionTypes: types}
}

// SeedFile is where Ensure keeps the identity's seed in dir.
func (i Identity) SeedFile(dir string) string { return filepath.Join(dir, i.Name()+".nk") }

// Ensure returns the identity's public key, reading its seed from dir or
// making one there (mode 0600, in a directory of mode 0700). The seed is
// never returned, printed or logged.
func (i Identity) Ensure(dir string) (string, error) {
	if err := i.Validate(); err != nil {
		return "", err
	}
	path := i.SeedFile(dir)
	if kp, err := readSeed(path); err == nil {
		defer kp.Wipe()
		return kp.PublicKey()
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("natsauth: %w", err)
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", fmt.Errorf("natsauth: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", fmt.Errorf("natsauth: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", fmt.Errorf("natsauth: %w", err)
	}
	_, werr := f.Write(append(seed, '\n'))
	if err := errors.Join(werr, f.Close()); err != nil {
		return "", fmt.Errorf("natsauth: write seed %s: %w", path, err)
	}
	return kp.PublicKey()
}

// Users ensures a seed in dir for each identity (Ensure) and returns the
// server's users for them, in order.
func Users(dir string, ids ...Identity) ([]*server.NkeyUser, error) {
	users := make([]*server.NkeyUser, 0, len(ids))
	for _, id := range ids {
		pub, err := id.Ensure(dir)
		if err != nil {
			return nil, err
		}
		users = append(users, id.User(pub))
	}
	return users, nil
}

func readSeed(path string) (nkeys.KeyPair, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(data))))
	if err != nil {
		// Never wrap the parse error: it may quote the file.
		return nil, fmt.Errorf("natsauth: %s holds no user nkey seed", path)
	}
	return kp, nil
}

// ClientOptions are the options a process connects with as identity i:
// the nkey seed file (empty: no authentication, a server without
// users), its own inbox, and a CA file for a server certificate signed by
// a private CA (empty: the system's roots, when the URL is tls://).
func (i Identity) ClientOptions(seedFile, caFile string) ([]nats.Option, error) {
	if err := i.Validate(); err != nil {
		return nil, err
	}
	opts := []nats.Option{nats.CustomInboxPrefix(i.InboxPrefix())}
	if seedFile != "" {
		o, err := nats.NkeyOptionFromSeed(seedFile)
		if err != nil {
			return nil, fmt.Errorf("natsauth: nkey seed file %s: %w", seedFile, err)
		}
		opts = append(opts, o)
	}
	if caFile != "" {
		opts = append(opts, nats.RootCAs(caFile))
	}
	return opts, nil
}
