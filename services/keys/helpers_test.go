package keys_test

import "github.com/infergate/infergate/services/internal/eventstore"

func keyAggregate(project, name string) eventstore.Aggregate {
	return eventstore.Aggregate{Project: project, Type: eventstore.TypeKey, Name: name}
}
