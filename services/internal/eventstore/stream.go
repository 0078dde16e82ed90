package eventstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The stream's configuration has one owner (SPEC §7; "Stream ownership" in
// docs/architecture.md).
// It is declared here, once. CreateStream and UpdateStream — what
// `infergate admin stream create|update` runs — are the only writers; Open,
// which every service and gateway calls, binds and verifies and never
// changes it, so a process started with other settings fails instead of
// silently reconfiguring the source of truth.

// ErrStreamMismatch means the stream's configuration differs from the
// declaration or from what the caller expects of it (replicas, duplicate
// window, storage). The message names each field, expected and actual.
var ErrStreamMismatch = errors.New("eventstore: stream configuration mismatch")

// Stream defaults and bounds.
const (
	DefaultStream        = "INFERGATE_EVENTS"
	DefaultSubjectPrefix = "infergate.events"
	// DefaultReplicas is what CreateStream sets when Config.Replicas is 0:
	// right for one server; a production cluster uses 3.
	DefaultReplicas = 1
	// MinDuplicateWindow is the shortest duplicate window: within it a
	// retried append with the same message id stores nothing.
	MinDuplicateWindow = 2 * time.Minute

	// UsageStream is the gateways' usage stream (docs/usage.md): not
	// events, and not the source of truth of anything but usage counts.
	// Its configuration has the same owner and the same declaration as
	// the event stream's, on its own subjects; UsageConfig names it.
	UsageStream        = "INFERGATE_USAGE"
	UsageSubjectPrefix = "infergate.usage"
)

// UsageConfig is the Config of the usage stream: its name, its subjects
// and Raw (its messages are usage flushes, not event batches).
func UsageConfig() Config {
	return Config{Stream: UsageStream, SubjectPrefix: UsageSubjectPrefix, Raw: true}
}

// Config names the stream and says what its configuration is, or is
// expected to be.
type Config struct {
	// Stream is the JetStream stream name; default INFERGATE_EVENTS.
	Stream string
	// SubjectPrefix is the first subject tokens; default infergate.events.
	SubjectPrefix string
	// Replicas is the stream's replica count. CreateStream sets it
	// (0 means 1; use 3 on a production cluster) and UpdateStream changes
	// it (0 keeps it). For Open it is an expectation: a stream with
	// another count is ErrStreamMismatch; 0 accepts what the stream has.
	Replicas int
	// DuplicateWindow is how long JetStream remembers message ids for
	// idempotent appends, at least 2 minutes. CreateStream sets it (0
	// means 2 minutes), UpdateStream changes it (0 keeps it), Open checks
	// it when set (0 accepts any window of at least 2 minutes).
	DuplicateWindow time.Duration
	// Memory declares memory storage instead of files (tests only). Open
	// refuses a stream with the other storage; UpdateStream never changes
	// it.
	Memory bool
	// CachedAggregates is how many aggregates' records Load keeps to read
	// only what is new next time; 0 means 10,000, negative disables.
	CachedAggregates int
	// Raw: the stream's messages are not event batches; Follow delivers
	// each one's data in Record.Data (the usage stream).
	Raw bool
}

func (c *Config) setDefaults() {
	c.Stream = cmp.Or(c.Stream, DefaultStream)
	if c.Stream == UsageStream {
		c.SubjectPrefix, c.Raw = cmp.Or(c.SubjectPrefix, UsageSubjectPrefix), true
	}
	c.SubjectPrefix = cmp.Or(c.SubjectPrefix, DefaultSubjectPrefix)
	if c.CachedAggregates == 0 {
		c.CachedAggregates = 10_000
	}
}

// Validate reports every problem with the config at once.
func (c *Config) Validate() error {
	var errs []error
	if strings.ContainsAny(c.Stream, ".*> \t") || c.Stream == "" {
		errs = append(errs, fmt.Errorf("%w: stream name %q", ErrInvalid, c.Stream))
	}
	for _, tok := range strings.Split(c.SubjectPrefix, ".") {
		if validToken(tok) != nil {
			errs = append(errs, fmt.Errorf("%w: subject prefix %q", ErrInvalid, c.SubjectPrefix))
			break
		}
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		errs = append(errs, fmt.Errorf("%w: replicas %d not in 1..5 (or 0: not stated)", ErrInvalid, c.Replicas))
	}
	if c.DuplicateWindow != 0 && c.DuplicateWindow < MinDuplicateWindow {
		errs = append(errs, fmt.Errorf("%w: duplicate window %s is below %s", ErrInvalid, c.DuplicateWindow, MinDuplicateWindow))
	}
	return errors.Join(errs...)
}

func (c *Config) storage() jetstream.StorageType {
	if c.Memory {
		return jetstream.MemoryStorage
	}
	return jetstream.FileStorage
}

// declared is the declaration: the stream's whole configuration, with the
// given replica count and duplicate window.
func (c *Config) declared(replicas int, window time.Duration) jetstream.StreamConfig {
	desc := "infergate events: the source of truth"
	if c.Raw {
		desc = "infergate usage: the gateways' request counts"
	}
	return jetstream.StreamConfig{
		Name:        c.Stream,
		Description: desc,
		Subjects:    []string{c.SubjectPrefix + ".>"},
		Storage:     c.storage(),
		Replicas:    replicas,
		// Nothing expires and nothing is deleted: every reader rebuilds
		// its state by replaying from the first event.
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            0,
		MaxMsgs:           -1,
		MaxBytes:          -1,
		MaxMsgsPerSubject: -1,
		Duplicates:        window,
		// Aggregates are loaded with direct gets by subject.
		AllowDirect: true,
		DenyDelete:  true,
		DenyPurge:   true,
		// A command whose facts belong to several aggregates (a key
		// created with its links) appends them as one atomic batch
		// (AppendAtomic).
		AllowAtomicPublish: true,
	}
}

// MismatchError is one field of the stream that differs from the
// declaration or the caller's expectation. It wraps ErrStreamMismatch.
type MismatchError struct {
	Stream, Field    string
	Expected, Actual string
}

func (e *MismatchError) Error() string {
	return fmt.Sprintf("%v: stream %s: %s is %s, expected %s", ErrStreamMismatch, e.Stream, e.Field, e.Actual, e.Expected)
}

func (e *MismatchError) Unwrap() error { return ErrStreamMismatch }

// Mismatches lists the MismatchErrors in err (as Verify and Open return
// them), in order.
func Mismatches(err error) []*MismatchError {
	var out []*MismatchError
	var walk func(error)
	walk = func(err error) {
		if m, ok := err.(*MismatchError); ok {
			out = append(out, m)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// Verify reports how got, a stream's configuration, differs from the
// declaration and from what c expects (replicas and duplicate window when
// set; storage always): one *MismatchError per field, joined.
func (c *Config) Verify(got jetstream.StreamConfig) error {
	cp := *c // defaults on a copy
	c = &cp
	c.setDefaults()
	want := c.declared(c.Replicas, c.DuplicateWindow)
	var errs []error
	differ := func(field string, expected, actual any) {
		errs = append(errs, &MismatchError{Stream: c.Stream, Field: field, Expected: fmt.Sprint(expected), Actual: fmt.Sprint(actual)})
	}
	if !slices.Equal(got.Subjects, want.Subjects) {
		differ("subjects", want.Subjects, got.Subjects)
	}
	if got.Storage != want.Storage {
		differ("storage", storageName(want.Storage), storageName(got.Storage))
	}
	if c.Replicas != 0 && got.Replicas != c.Replicas {
		differ("replicas", c.Replicas, got.Replicas)
	}
	switch {
	case c.DuplicateWindow != 0 && got.Duplicates != c.DuplicateWindow:
		differ("duplicate window", c.DuplicateWindow, got.Duplicates)
	case got.Duplicates < MinDuplicateWindow:
		differ("duplicate window", "at least "+MinDuplicateWindow.String(), got.Duplicates)
	}
	if got.Retention != want.Retention {
		differ("retention", want.Retention, got.Retention)
	}
	if got.Discard != want.Discard {
		differ("discard", want.Discard, got.Discard)
	}
	if got.MaxAge != 0 || got.MaxMsgs > 0 || got.MaxBytes > 0 || got.MaxMsgsPerSubject > 0 {
		differ("limits", "none (nothing expires)", fmt.Sprintf("max age %s, max messages %d, max bytes %d, max messages per subject %d",
			got.MaxAge, got.MaxMsgs, got.MaxBytes, got.MaxMsgsPerSubject))
	}
	if got.DenyDelete != want.DenyDelete {
		differ("deny delete", want.DenyDelete, got.DenyDelete)
	}
	if got.DenyPurge != want.DenyPurge {
		differ("deny purge", want.DenyPurge, got.DenyPurge)
	}
	if got.AllowDirect != want.AllowDirect {
		differ("allow direct", want.AllowDirect, got.AllowDirect)
	}
	if got.AllowAtomicPublish != want.AllowAtomicPublish {
		differ("allow atomic publish", want.AllowAtomicPublish, got.AllowAtomicPublish)
	}
	if got.Sealed {
		differ("sealed", false, true)
	}
	return errors.Join(errs...)
}

func storageName(s jetstream.StorageType) string { return strings.ToLower(s.String()) }

// createHint tells an operator how to make the stream.
const createHint = `create it once with "infergate admin stream create --replicas N" (3 on a production cluster)`

// Info reads the stream's configuration and state. A missing stream is an
// error wrapping jetstream.ErrStreamNotFound that says how to create it.
func Info(ctx context.Context, js jetstream.JetStream, cfg Config) (*jetstream.StreamInfo, error) {
	cfg.setDefaults()
	stream, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("eventstore: stream %s: %w; %s", cfg.Stream, err, createHint)
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: stream %s: %w", cfg.Stream, err)
	}
	return stream.CachedInfo(), nil
}

// Open binds to the stream and verifies its configuration against the
// declaration and cfg's expectations; it never creates or changes the
// stream. A missing stream is an error wrapping jetstream.ErrStreamNotFound,
// a different configuration one wrapping ErrStreamMismatch. The Store's
// Config then holds the stream's actual replicas and duplicate window.
func Open(ctx context.Context, js jetstream.JetStream, cfg Config) (*Store, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	stream, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("eventstore: open stream %s: %w; %s", cfg.Stream, err, createHint)
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: open stream %s: %w", cfg.Stream, err)
	}
	got := stream.CachedInfo().Config
	if err := cfg.Verify(got); err != nil {
		return nil, err
	}
	cfg.Replicas, cfg.DuplicateWindow, cfg.Memory = got.Replicas, got.Duplicates, got.Storage == jetstream.MemoryStorage
	return &Store{js: js, stream: stream, cfg: cfg, cache: newAggCache(cfg.CachedAggregates)}, nil
}

// Config is the configuration the store was opened with, with the
// stream's actual replicas, duplicate window and storage.
func (s *Store) Config() Config { return s.cfg }

// CreateStream creates the stream as declared, with cfg's replicas and
// duplicate window (defaults 1 and 2 minutes). Creating a stream that
// already exists exactly so changes nothing; one that exists otherwise is
// an error wrapping jetstream.ErrStreamNameAlreadyInUse.
func CreateStream(ctx context.Context, js jetstream.JetStream, cfg Config) (*jetstream.StreamInfo, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	want := cfg.declared(cmp.Or(cfg.Replicas, DefaultReplicas), cmp.Or(cfg.DuplicateWindow, MinDuplicateWindow))
	stream, err := js.CreateStream(ctx, want)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil, fmt.Errorf(`eventstore: create stream %s: %w with another configuration: see "infergate admin stream info", change replicas or the duplicate window with "infergate admin stream update"`, cfg.Stream, err)
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore: create stream %s: %w", cfg.Stream, err)
	}
	return stream.CachedInfo(), nil
}

// UpdateStream brings an existing stream back to the declaration and sets
// cfg's replicas and duplicate window where given (0 keeps the stream's;
// a window below the minimum becomes 2 minutes). It refuses to change the
// subjects or the storage, which JetStream cannot convert in place, with an
// error wrapping ErrStreamMismatch. Settings the declaration does not
// cover (placement, metadata) are kept.
func UpdateStream(ctx context.Context, js jetstream.JetStream, cfg Config) (*jetstream.StreamInfo, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	info, err := Info(ctx, js, cfg)
	if err != nil {
		return nil, err
	}
	cur := info.Config
	want := cfg.declared(cmp.Or(cfg.Replicas, cur.Replicas), cmp.Or(cfg.DuplicateWindow, max(cur.Duplicates, MinDuplicateWindow)))
	var errs []error
	if !slices.Equal(cur.Subjects, want.Subjects) {
		errs = append(errs, fmt.Errorf("%w: stream %s: cannot change subjects from %v to %v", ErrStreamMismatch, cfg.Stream, cur.Subjects, want.Subjects))
	}
	if cur.Storage != want.Storage {
		errs = append(errs, fmt.Errorf("%w: stream %s: cannot change storage from %s to %s: JetStream cannot convert a stream in place",
			ErrStreamMismatch, cfg.Stream, storageName(cur.Storage), storageName(want.Storage)))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	next := cur
	next.Description = want.Description
	next.Replicas, next.Duplicates = want.Replicas, want.Duplicates
	next.Retention, next.Discard = want.Retention, want.Discard
	next.MaxAge, next.MaxMsgs, next.MaxBytes, next.MaxMsgsPerSubject = want.MaxAge, want.MaxMsgs, want.MaxBytes, want.MaxMsgsPerSubject
	next.AllowDirect, next.DenyDelete, next.DenyPurge = want.AllowDirect, want.DenyDelete, want.DenyPurge
	next.AllowAtomicPublish = want.AllowAtomicPublish
	stream, err := js.UpdateStream(ctx, next)
	if err != nil {
		return nil, fmt.Errorf("eventstore: update stream %s: %w", cfg.Stream, err)
	}
	return stream.CachedInfo(), nil
}

// EnsureStream creates the stream as declared when it is missing and
// otherwise verifies it as Open does. It is for a process that is also the
// stream's owner — `infergate dev`, the benchmarks' stacks, tests — never
// for a service of a production deployment, which only opens.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg Config) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	info, err := Info(ctx, js, cfg)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = CreateStream(ctx, js, cfg)
		return err
	}
	if err != nil {
		return err
	}
	err = cfg.Verify(info.Config)
	if m := Mismatches(err); len(m) == 1 && m[0].Field == "allow atomic publish" {
		// A stream made before atomic batches were declared (an old data
		// dir of `infergate dev`), and otherwise as declared: its owner
		// brings it up to date. Any other difference is left for an
		// operator to see.
		_, err = UpdateStream(ctx, js, cfg)
	}
	return err
}
