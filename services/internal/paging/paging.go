// Package paging turns list page tokens into read-model pages and back.
// A token is the opaque form of the last name of the previous page, so a
// page stays stable while items are added or removed elsewhere.
package paging

import (
	"encoding/base64"

	"github.com/infergate/infergate/services/internal/aggregate"
	"github.com/infergate/infergate/services/internal/readmodel"
)

const (
	// DefaultSize is the page size when the request sets none.
	DefaultSize = 100
	// MaxSize is the largest page size.
	MaxSize = 1000
)

// Parse checks a request's page size and token.
func Parse(size int32, token string) (readmodel.Page, error) {
	if size < 0 || size > MaxSize {
		return readmodel.Page{}, &aggregate.FieldError{Field: "page_size", Problem: "must be between 0 and 1000"}
	}
	if size == 0 {
		size = DefaultSize
	}
	after, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return readmodel.Page{}, &aggregate.FieldError{Field: "page_token", Problem: "is not a token this service issued"}
	}
	// Ask for one more than the page to learn whether another page follows.
	return readmodel.Page{After: string(after), Limit: int(size) + 1}, nil
}

// Trim cuts a fetched list to the page and returns the next page's token.
func Trim[T any](items []T, p readmodel.Page, name func(T) string) ([]T, string) {
	if len(items) < p.Limit {
		return items, ""
	}
	items = items[:p.Limit-1]
	return items, base64.RawURLEncoding.EncodeToString([]byte(name(items[len(items)-1])))
}
