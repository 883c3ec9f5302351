package instance

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A sender that has exited but that its parent has not reaped (a zombie)
// is gone: kill(2) still finds it, and its slot would stay taken for as
// long as the parent lives.
func TestProcessAliveZombie(t *testing.T) {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envRole+"=hello")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	stat := "/proc/" + strconv.Itoa(pid) + "/stat"
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), ") Z ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no zombie: %s", stat, b)
		}
	}
	if processAlive(pid) {
		t.Errorf("processAlive(%d) = true for a zombie", pid)
	}
	cmd.Wait()
	if processAlive(pid) {
		t.Errorf("processAlive(%d) = true once reaped", pid)
	}
}
