// Package readmodel holds the query side of the control plane: projections
// of the event stream into keys and deployments (with their links) for the
// Get and List RPCs. Two stores implement Store — PostgreSQL (pgx/v5) and
// memory — and both pass one conformance suite (readmodeltest).
//
// A store applies one stream record at a time and stores the record's
// sequence as its checkpoint in the same transaction as the change, so a
// restarted projection resumes at checkpoint+1 and neither skips nor
// doubles an event. Records at or below the checkpoint are ignored.
package readmodel

import (
	"context"
	"errors"
	"time"

	"github.com/infergate/infergate/services/internal/eventstore"
	"github.com/infergate/infergate/services/internal/follow"
)

// ErrNotFound means no live key or deployment has that name.
var ErrNotFound = errors.New("readmodel: not found")

// Key is a live (not deleted) API key as the control plane shows it.
type Key struct {
	Project     string
	Name        string
	ID          string
	Description string
	Hint        string
	// ExpiresAt is nil when the key never expires.
	ExpiresAt *time.Time
	CreatedAt time.Time
	// RotatedAt is when the secret was last rotated; nil if never.
	RotatedAt *time.Time
	// PreviousHint is the hint of the secret the last rotation replaced,
	// and PreviousNotAfter when it stops working; "" and nil if never
	// rotated.
	PreviousHint     string
	PreviousNotAfter *time.Time
	// DeploymentNames are the live deployments the key is linked to,
	// sorted.
	DeploymentNames []string
}

// Deployment statuses, as stored.
const (
	StatusDeploying = "DEPLOYING"
	StatusDeployed  = "DEPLOYED"
	StatusFailed    = "FAILED"
)

// Deployment is a live (not deleted) deployment.
type Deployment struct {
	Project     string
	Name        string
	ID          string
	Model       string
	UpstreamURL string
	// Regions is empty when the deployment is served in every region.
	Regions      []string
	Status       string
	StatusReason string
	AuthEnabled  bool
	// APIKeys are the names of the live keys linked to it, sorted.
	APIKeys   []string
	CreatedAt time.Time
}

// Page selects a page of a list ordered by name.
type Page struct {
	// After is the last name of the previous page; empty for the first.
	After string
	// Limit is the largest number of items to return (> 0).
	Limit int
}

// Store is a read model: it applies stream records and answers queries.
type Store interface {
	// Apply applies every event of the record and records its sequence as
	// the checkpoint's, atomically. A record at or below the checkpoint is
	// ignored (returns nil).
	Apply(ctx context.Context, rec eventstore.Record) error
	// Checkpoint is the stream's life the store was built from and the
	// sequence of the last record applied; zero when none.
	Checkpoint(ctx context.Context) (follow.Checkpoint, error)
	// Reset empties the store and sets the checkpoint to {to, 0}, in one
	// transaction: the stream it was built from is gone or went back.
	Reset(ctx context.Context, to eventstore.Identity) error

	GetKey(ctx context.Context, project, name string) (Key, error)
	// ListKeys returns up to p.Limit keys with names after p.After, ordered
	// by name.
	ListKeys(ctx context.Context, project string, p Page) ([]Key, error)
	GetDeployment(ctx context.Context, project, name string) (Deployment, error)
	// ListDeployments returns up to p.Limit deployments with names after
	// p.After, ordered by name.
	ListDeployments(ctx context.Context, project string, p Page) ([]Deployment, error)
}
