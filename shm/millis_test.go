package shm

import (
	"math"
	"testing"
	"time"
)

func TestMillis(t *testing.T) {
	for _, c := range []struct {
		timeout time.Duration
		want    int64
	}{
		{0, 0},
		{time.Nanosecond, 1},
		{time.Millisecond, 1},
		{time.Millisecond + 1, 2},
		{30 * 24 * time.Hour, math.MaxInt32}, // past a C int of milliseconds
		{math.MaxInt64, math.MaxInt32},       // where adding to it overflowed
	} {
		if got := millis(c.timeout, math.MaxInt32); got != c.want {
			t.Errorf("millis(%v) = %d, want %d", c.timeout, got, c.want)
		}
	}
}
