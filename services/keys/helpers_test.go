package keys_test

import (
	"errors"

	"github.com/infergate/infergate/services/internal/eventstore"
)

func keyAggregate(project, name string) eventstore.Aggregate {
	return eventstore.Aggregate{Project: project, Type: eventstore.TypeKey, Name: name}
}

var errNotYet = errors.New("not yet")
