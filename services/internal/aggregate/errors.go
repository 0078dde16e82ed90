// Package aggregate is the domain of the control plane: the key and
// deployment aggregates, their validation rules and the events their
// commands produce. It does no I/O; services load records from the event
// store, fold them here, decide, and append what the decision returns.
package aggregate

import (
	"errors"
	"fmt"
)

// Sentinels a transport maps to status codes, once, at the edge.
var (
	// ErrInvalid means the command's input breaks a rule; the error is a
	// *FieldError naming the field.
	ErrInvalid = errors.New("invalid argument")
	// ErrNotFound means the key or deployment does not exist (or was
	// deleted, or belongs to another project).
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists means a live key or deployment already has the name.
	ErrAlreadyExists = errors.New("already exists")
	// ErrFailedPrecondition means the aggregate is not in a state the
	// command can apply to (an expired key cannot be rotated).
	ErrFailedPrecondition = errors.New("failed precondition")
)

// FieldError says which field of a request breaks which rule.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Problem }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Unwrap() error { return ErrInvalid }

func invalid(field, format string, args ...any) error {
	return &FieldError{Field: field, Problem: fmt.Sprintf(format, args...)}
}

func wrapf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sentinel}, args...)...)
}

func joinErrs(errs ...error) error { return errors.Join(errs...) }
