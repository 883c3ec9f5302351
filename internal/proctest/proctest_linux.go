package proctest

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// runs sums the last field of /proc/<pid>/task/*/schedstat: how many times
// each thread was run (after the time it ran and the time it waited).
func runs(pid int) (int64, error) {
	stats, err := filepath.Glob("/proc/" + strconv.Itoa(pid) + "/task/*/schedstat")
	if err != nil || len(stats) == 0 {
		return 0, fmt.Errorf("%w: no /proc/%d/task/*/schedstat", ErrUncounted, pid)
	}
	var sum int64
	for _, path := range stats {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err // a thread that ended: not an idle process
		}
		f := strings.Fields(string(b))
		if len(f) != 3 {
			return 0, fmt.Errorf("%s: %q", path, b)
		}
		n, err := strconv.ParseInt(f[2], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q", path, b)
		}
		sum += n
	}
	return sum, nil
}
