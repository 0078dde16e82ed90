package authmap

import "testing"

func TestKeyID(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"0f8fad5b-d9cb-469f-a165-70867728950e", // kept in 16 bytes
		"0F8FAD5B-D9CB-469F-A165-70867728950E", // not canonical: kept as is
		"ka", "", "0f8fad5b-d9cb-469f-a165-70867728950", "0f8fad5bxd9cb-469f-a165-70867728950e",
	} {
		id := makeKeyID(s)
		if id.String() != s || !id.is(s) {
			t.Errorf("%q: String %q, is %v", s, id.String(), id.is(s))
		}
		if id.is(s+"x") || (s != "" && id.is("")) {
			t.Errorf("%q matches another id", s)
		}
	}
	if makeKeyID("0f8fad5b-d9cb-469f-a165-70867728950e").other != "" {
		t.Error("a canonical UUID is kept as a string")
	}
}
