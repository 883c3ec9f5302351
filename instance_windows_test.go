package instance

import (
	"math"
	"testing"
)

// A PID from the region that would let every process take the foreground
// (ASFW_ANY, or a number that is that once cut to 32 bits) is not passed
// to AllowSetForegroundWindow.
func TestForegroundPID(t *testing.T) {
	for _, tc := range []struct {
		pid int64
		ok  bool
	}{{1234, true}, {0, false}, {-1, false}, {0xFFFFFFFF, false}, {0x1FFFFFFFF, false}} {
		if tc.pid > math.MaxInt {
			continue // not an int here: the region's reader has cut it already
		}
		if got := foregroundPID(int(tc.pid)); got != tc.ok {
			t.Errorf("foregroundPID(%#x) = %v, want %v", tc.pid, got, tc.ok)
		}
	}
}
