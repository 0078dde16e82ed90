package postgres

// MigrationNames lists the embedded migrations, for the tests.
func MigrationNames() ([]string, error) {
	migs, err := migrations()
	if err != nil {
		return nil, err
	}
	names := make([]string, len(migs))
	for i, m := range migs {
		names[i] = m.name
	}
	return names, nil
}
