package readmodel_test

import (
	"testing"

	"github.com/infergate/infergate/services/internal/readmodel"
	"github.com/infergate/infergate/services/internal/readmodel/readmodeltest"
)

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	readmodeltest.Run(t, func(t *testing.T) readmodel.Store { return readmodel.NewMemory() })
}

func TestUsageMemoryConformance(t *testing.T) {
	t.Parallel()
	readmodeltest.RunUsage(t, func(t *testing.T) readmodel.UsageStore { return readmodel.NewUsageMemory() })
}
