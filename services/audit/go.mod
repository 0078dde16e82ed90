module github.com/infergate/infergate/services/audit

go 1.26

require (
	github.com/infergate/infergate/gen v0.0.0
	github.com/infergate/infergate/services/internal v0.0.0
)

replace github.com/infergate/infergate/gen => ../../gen

replace github.com/infergate/infergate/services/internal => ../internal
