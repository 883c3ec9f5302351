package main

import (
	"os"
	"testing"
)

// The demo launches copies of its executable as secondaries: under test
// that is the test binary, which runs main when DEMO_DIR names the demo's
// directory.
func TestMain(m *testing.M) {
	if os.Getenv("DEMO_DIR") != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestDemo(t *testing.T) {
	if err := run(); err != nil {
		t.Fatal(err)
	}
}
