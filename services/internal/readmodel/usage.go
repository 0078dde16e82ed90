package readmodel

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	usagev1 "github.com/infergate/infergate/gen/infergate/usage/v1"
	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
)

// The usage projection (docs/usage.md) folds the gateways' flushes from
// the usage stream into minute buckets per project, deployment and key,
// plus the last use of each pair. It is a follow.Consumer of the usage
// stream, so it shares the read models' guarantees: its checkpoint (the
// usage stream's life and sequence) is written with each flush, and a
// usage stream created again empties it. A flush is applied once even if
// the stream stored it twice (a retry after the duplicate window): each
// gateway run's flushes carry increasing sequences, and the projection
// keeps the last one applied per run.

// ErrInvalidUsage means a flush could not be decoded; it is skipped
// (logged), not retried: it will not decode better next time.
var ErrInvalidUsage = errors.New("readmodel: invalid usage flush")

// UsageStore is the usage projection.
type UsageStore interface {
	follow.Consumer
	// Usage returns the counts of the buckets that match f, summed by
	// step (from f.Since) and by f.By's name.
	Usage(ctx context.Context, f UsageFilter) ([]UsageRow, error)
	// LastUsed returns the last use of every (deployment, key) pair of
	// project ever counted.
	LastUsed(ctx context.Context, project string) ([]LastUse, error)
}

// Counts are request counts by status class and reported tokens.
type Counts struct {
	OK, ClientErrors, ServerErrors, Refused uint64
	PromptTokens, CompletionTokens          uint64
}

// Add adds o to c.
func (c *Counts) Add(o Counts) {
	c.OK += o.OK
	c.ClientErrors += o.ClientErrors
	c.ServerErrors += o.ServerErrors
	c.Refused += o.Refused
	c.PromptTokens += o.PromptTokens
	c.CompletionTokens += o.CompletionTokens
}

// Requests is the number of requests counted.
func (c Counts) Requests() uint64 { return c.OK + c.ClientErrors + c.ServerErrors + c.Refused }

// Dimension is what usage is broken down by.
type Dimension int

// The dimensions.
const (
	ByDeployment Dimension = iota
	ByKey
)

// UsageFilter selects buckets.
type UsageFilter struct {
	Project string
	// Key and Deployment select one key or deployment; "" is any.
	Key, Deployment string
	// Since (a whole minute) and Until bound the minutes; Step (whole
	// minutes) is the width of the series' buckets, counted from Since.
	Since, Until time.Time
	Step         time.Duration
	// By is the breakdown's dimension.
	By Dimension
}

// UsageRow is the counts of one step and one name of the breakdown.
type UsageRow struct {
	Start  time.Time
	Name   string
	Counts Counts
}

// LastUse is when a key was last used at a deployment (Key "" for
// requests without a known key).
type LastUse struct {
	Deployment, Key string
	At              time.Time
}

// Usage is the summary of a selection.
type Usage struct {
	Total    Counts
	LastUsed time.Time // zero: never
	Series   []Bucket
	Parts    []Part
}

// Bucket is one step of a series.
type Bucket struct {
	Start  time.Time
	Counts Counts
}

// Part is one name of the breakdown.
type Part struct {
	Name     string
	Counts   Counts
	LastUsed time.Time
}

// Summarize builds a selection's usage from its rows and the project's
// last uses (filtered here by f's key and deployment).
func Summarize(f UsageFilter, rows []UsageRow, last []LastUse) Usage {
	var u Usage
	series := map[time.Time]*Counts{}
	parts := map[string]*Part{}
	for _, r := range rows {
		u.Total.Add(r.Counts)
		c := series[r.Start]
		if c == nil {
			c = &Counts{}
			series[r.Start] = c
		}
		c.Add(r.Counts)
		p := parts[r.Name]
		if p == nil {
			p = &Part{Name: r.Name}
			parts[r.Name] = p
		}
		p.Counts.Add(r.Counts)
	}
	for _, l := range last {
		if (f.Key != "" && l.Key != f.Key) || (f.Deployment != "" && l.Deployment != f.Deployment) {
			continue
		}
		if l.At.After(u.LastUsed) {
			u.LastUsed = l.At
		}
		name := l.Deployment
		if f.By == ByKey {
			name = l.Key
		}
		if p := parts[name]; p != nil && l.At.After(p.LastUsed) {
			p.LastUsed = l.At
		}
	}
	for start, c := range series {
		u.Series = append(u.Series, Bucket{Start: start, Counts: *c})
	}
	slices.SortFunc(u.Series, func(a, b Bucket) int { return a.Start.Compare(b.Start) })
	for _, p := range parts {
		u.Parts = append(u.Parts, *p)
	}
	slices.SortFunc(u.Parts, func(a, b Part) int { return cmp.Compare(a.Name, b.Name) })
	return u
}

// StepStart is the start of the step a minute (Unix seconds) falls in,
// for a filter.
func (f UsageFilter) StepStart(minute int64) time.Time {
	since, step := f.Since.Unix(), int64(f.Step/time.Second)
	return time.Unix(since+(minute-since)/step*step, 0).UTC()
}

// DecodeFlush decodes a usage stream record.
func DecodeFlush(rec eventstore.Record) (*usagev1.Flush, error) {
	var f usagev1.Flush
	if err := proto.Unmarshal(rec.Data, &f); err != nil {
		return nil, fmt.Errorf("%w: sequence %d on %s: %w", ErrInvalidUsage, rec.Sequence, rec.Subject, err)
	}
	if f.GetGateway() == "" || f.GetBoot() == "" || f.GetSequence() == 0 {
		return nil, fmt.Errorf("%w: sequence %d on %s: no gateway, boot or flush sequence", ErrInvalidUsage, rec.Sequence, rec.Subject)
	}
	return &f, nil
}

// Sender names the gateway run a flush comes from.
func Sender(f *usagev1.Flush) string {
	return f.GetRegion() + "." + f.GetGateway() + "." + f.GetBoot()
}

// CountsOf converts a flush row's counts.
func CountsOf(c *usagev1.Counts) Counts {
	return Counts{
		OK: c.GetOk(), ClientErrors: c.GetClientErrors(), ServerErrors: c.GetServerErrors(), Refused: c.GetRefused(),
		PromptTokens: c.GetPromptTokens(), CompletionTokens: c.GetCompletionTokens(),
	}
}

// UsageProjector follows the usage stream into a UsageStore, on the one
// follower primitive (package follow), as Projector does the event
// stream into a Store.
type UsageProjector struct {
	*follow.Follower
}

// NewUsageProjector returns a projector of the usage stream (a Store
// opened with eventstore.UsageConfig) into store. A nil log discards.
func NewUsageProjector(stream *eventstore.Store, store UsageStore, log *slog.Logger) *UsageProjector {
	return &UsageProjector{follow.New(follow.Config{
		Name:     "usage projection",
		Source:   stream,
		Consumer: store,
		Log:      log,
	})}
}
