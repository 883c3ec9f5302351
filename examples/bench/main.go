// Command bench measures the handoff of package instance against the
// baseline every other single-instance library uses, a Unix domain socket
// (on Windows a named pipe), both measured in the same run on the same
// machine:
//
//	go run ./examples/bench [-duration 2s] [-senders 16] [-launches 200] [-idle 10s] [-gap 1ms]
//
// It prints a table, then one line per figure (medians and 99th
// percentiles of many samples):
//
//	handoff_latency_us       Acquire in a secondary, from call to reply, primary in another process, 200 bytes of argv
//	socket_latency_us        connect, write the same 200 bytes, read a 1-byte ack, close; Go server in another process
//	(table) after idle       both again, each after a pause of -gap, as between a user's launches
//	(table) busy             both again so, beside a CPU-bound process on each processor, as
//	                         on a desktop that is compiling
//	secondary_process_ms     start a secondary process that forwards and exits
//	hello_process_ms         start the same binary in a mode that only exits
//	throughput_msgs_per_s    messages per second from -senders concurrent sender processes, both ways
//	                         (a secondary's Acquire and Release; a socket's whole exchange)
//	(table) goroutines       the same from -senders goroutines of this process
//	idle_primary_cpu_ms_10s  CPU time an idle primary uses in 10 s (watched for -idle, and
//	                         scaled to 10 s when that is another time)
//	(table) system calls     per Acquire of a secondary, and per socket exchange,
//	                         counted with strace where it is installed (Linux)
//	portable_*               the latency lines again with the FIFO doorbell (the
//	                         internal switch, on Linux; elsewhere the same doorbell again)
//
// The instance's files are where an application's would be, in the
// library's per-user directory ($XDG_RUNTIME_DIR/go-instance, else
// go-instance-<uid> in $TMPDIR, or on Linux without $TMPDIR in /dev/shm);
// the socket is in a new temp directory, whose name also names the pipe.
// The program re-executes
// itself for the other processes; the figures are ratios of numbers taken
// minutes apart at most, never absolute goals.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-instance/instance"
	"github.com/go-instance/instance/internal/baseline"
	"github.com/go-instance/instance/internal/tuning"
)

const appID = "io.github.go-instance.bench"

// args is 200 bytes of arguments, as a launch with a few paths sends.
var args = []string{strings.Repeat("a", 66), strings.Repeat("b", 66), strings.Repeat("c", 68)}

func main() {
	if role := os.Getenv("BENCH_ROLE"); role != "" {
		if err := child(role); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", role+":", err)
			os.Exit(1)
		}
		return
	}
	duration := flag.Duration("duration", 2*time.Second, "how long each latency and throughput measurement runs")
	senders := flag.Int("senders", 16, "concurrent senders for the throughput measurement")
	launches := flag.Int("launches", 200, "process starts per kind, by turns (fewer leave the medians unstable)")
	idle := flag.Duration("idle", 10*time.Second, "how long the idle primary is watched")
	gap := flag.Duration("gap", time.Millisecond, "the pause before each sample of the latency after idling")
	flag.Parse()
	switch {
	case flag.NArg() > 0:
		usage("unexpected argument %q", flag.Arg(0))
	case *duration <= 0:
		usage("-duration %v: want more than 0", *duration)
	case *senders < 1:
		usage("-senders %d: want at least 1", *senders)
	case *launches < 1:
		usage("-launches %d: want at least 1", *launches)
	case *idle <= 0:
		usage("-idle %v: want more than 0", *idle)
	case *gap < 0:
		usage("-gap %v: want 0 or more", *gap)
	}
	if err := run(*duration, *senders, *launches, *idle, *gap); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func usage(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	flag.Usage()
	os.Exit(2)
}

// child runs one of the other processes, chosen by BENCH_ROLE.
func child(role string) error {
	dir := os.Getenv("BENCH_DIR")
	switch role {
	case "hello":
		return nil
	case "secondary":
		inst, err := instance.Acquire(appID, instance.WithArgs(args))
		if err == nil && inst.IsPrimary() {
			err = errors.New("became the primary")
		}
		return err
	case "primary", "primary-fifo", "idle":
		tuning.PortableDoorbell = role == "primary-fifo"
		inst, err := instance.Acquire(appID)
		if err != nil {
			return err
		}
		if !inst.IsPrimary() {
			return errors.New("another bench is running (its primary has the instance): run one at a time")
		}
		defer inst.Release()
		if role == "idle" {
			return idleCPU(inst)
		}
		ctx, cancel := context.WithCancel(context.Background())
		go func() {
			io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
			cancel()
		}()
		fmt.Println("ready")
		inst.Serve(ctx, func(m *instance.Message) instance.Reply { return instance.Reply{Data: []byte{1}} })
		return nil
	case "sender-handoff", "sender-socket":
		// Send until the time the parent writes on stdin, then print the
		// count.
		op := func() error { return handoff() }
		if role == "sender-socket" {
			op = func() error { return baseline.Exchange(dir) }
		}
		fmt.Println("ready")
		var end int64
		if _, err := fmt.Scan(&end); err != nil {
			return err
		}
		n := 0
		for time.Now().UnixNano() < end {
			if err := op(); err != nil {
				return err
			}
			n++
		}
		fmt.Println(n)
		return nil
	case "count-handoff", "count-socket":
		// BENCH_COUNT operations, for syscallsPer. No collection, nor
		// the cleanups it would run, in the middle; no Release, which a
		// launch leaves to its exit.
		debug.SetGCPercent(-1)
		n, err := strconv.Atoi(os.Getenv("BENCH_COUNT"))
		if err != nil {
			return err
		}
		for range n {
			if role == "count-socket" {
				err = baseline.Exchange(dir)
			} else {
				_, err = acquire()
			}
			if err != nil {
				return err
			}
		}
		return nil
	case "busy":
		// Keep a processor busy, as another program would, until the
		// parent closes stdin.
		var done atomic.Bool
		go func() {
			io.Copy(io.Discard, os.Stdin)
			done.Store(true)
		}()
		fmt.Println("ready")
		for !done.Load() {
		}
		return nil
	case "server":
		ln, err := baseline.Listen(dir)
		if err != nil {
			return err
		}
		go func() {
			io.Copy(io.Discard, os.Stdin)
			ln.Close()
		}()
		fmt.Println("ready")
		baseline.Serve(ln)
		return nil
	}
	return fmt.Errorf("unknown role %q", role)
}

// idleCPU reports the CPU time the primary uses while nothing happens,
// until the parent closes stdin. This goroutine waits for that itself and
// reads the time at once: the stop's own work (Serve woken and
// returning) comes after.
func idleCPU(inst *instance.Instance) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go inst.Serve(ctx, func(*instance.Message) instance.Reply { return instance.Reply{} })
	time.Sleep(100 * time.Millisecond) // let start-up settle
	before, err := cpuTime()
	if err != nil {
		return err
	}
	fmt.Println("ready")
	io.Copy(io.Discard, os.Stdin)
	after, err := cpuTime()
	if err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, int64(after-before))
	return nil
}

// proc is a running child process.
type proc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout *bufio.Reader
}

// command runs this program again as role, with the bench's dir and the
// extra environment.
func command(role, dir string, env ...string) (*exec.Cmd, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self)
	cmd.Env = append(append(os.Environ(), "BENCH_ROLE="+role, "BENCH_DIR="+dir), env...)
	return cmd, nil
}

func start(role, dir string) (*proc, error) {
	cmd, err := command(role, dir)
	if err != nil {
		return nil, err
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	if err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("%s did not start: %q %v", role, line, err)
	}
	return &proc{cmd, stdin, out}, nil
}

func (p *proc) stop() error {
	p.stdin.Close()
	return p.cmd.Wait()
}

type stats struct{ median, p99 time.Duration }

func summarize(d []time.Duration) stats {
	slices.Sort(d)
	return stats{d[len(d)/2], d[min(len(d)-1, len(d)*99/100)]}
}

// samplePair runs a and b by turns until duration has passed (and each
// at least 100 times) and returns their times. By turns, so that both see
// the same machine: its speed drifts by more than the difference measured.
// A gap is a pause before each, in which the other processes go idle, as
// they do between a user's launches. This process spins through it, as a
// launch's processor is busy starting the program: sleeping would let
// its processor idle too, which a launch's does not. What an operation
// returns to run after it, it runs once the clock has stopped.
func samplePair(duration, gap time.Duration, a, b func() (after func() error, err error)) (da, db []time.Duration, err error) {
	end := time.Now().Add(duration)
	for len(da) < 100 || time.Now().Before(end) {
		for _, s := range []struct {
			op func() (func() error, error)
			d  *[]time.Duration
		}{{a, &da}, {b, &db}} {
			for end := time.Now().Add(gap); time.Now().Before(end); {
			}
			t := time.Now()
			after, err := s.op()
			if err != nil {
				return nil, nil, err
			}
			*s.d = append(*s.d, time.Since(t))
			if after != nil {
				if err := after(); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	return da, db, nil
}

// sampleBusy is samplePair beside a CPU-bound process on each processor:
// a spin or a yield that suits an idle machine may cost a busy one a time
// slice of the scheduler (milliseconds) where it should cost nothing.
func sampleBusy(dir string, duration, gap time.Duration, a, b func() (func() error, error)) (da, db []time.Duration, err error) {
	var busy []*proc
	defer func() {
		for _, p := range busy {
			if serr := p.stop(); err == nil {
				err = serr
			}
		}
	}()
	for range runtime.NumCPU() {
		p, err := start("busy", dir)
		if err != nil {
			return nil, nil, err
		}
		busy = append(busy, p)
	}
	return samplePair(duration, gap, a, b)
}

// acquire is the latency's operation: Acquire until it returns with the
// reply. The secondary's Release, which unmaps the region (a launch that
// exits leaves that to the kernel), runs after it.
func acquire() (release func() error, err error) {
	inst, err := instance.Acquire(appID, instance.WithArgs(args))
	if err == nil && inst.IsPrimary() {
		inst.Release()
		return nil, errors.New("no primary")
	}
	if err != nil {
		return nil, err
	}
	return inst.Release, nil
}

// handoff is the throughput's operation: Acquire and Release, all a
// secondary costs.
func handoff() error {
	release, err := acquire()
	if err != nil {
		return err
	}
	return release()
}

// throughput runs op from n goroutines for duration and returns
// operations per second.
func throughput(n int, duration time.Duration, op func() error) (float64, error) {
	var count atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	end := time.Now().Add(duration)
	t := time.Now()
	for range n {
		wg.Go(func() {
			for time.Now().Before(end) {
				if err := op(); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(count.Load()) / time.Since(t).Seconds(), firstErr
}

// throughputProcs runs n processes of role for duration, all started
// before the clock does, and returns operations per second.
func throughputProcs(role, dir string, n int, duration time.Duration) (float64, error) {
	var ps []*proc
	defer func() {
		for _, p := range ps {
			p.cmd.Process.Kill()
			p.cmd.Wait()
		}
	}()
	for range n {
		p, err := start(role, dir)
		if err != nil {
			return 0, err
		}
		ps = append(ps, p)
	}
	t := time.Now()
	end := t.Add(duration).UnixNano()
	for _, p := range ps {
		fmt.Fprintln(p.stdin, end)
	}
	var total int
	for _, p := range ps {
		var count int
		if _, err := fmt.Fscan(p.stdout, &count); err != nil {
			return 0, fmt.Errorf("%s: %v", role, err)
		}
		total += count
	}
	return float64(total) / time.Since(t).Seconds(), nil
}

func launch(role, dir string) (time.Duration, error) {
	cmd, err := command(role, dir)
	if err != nil {
		return 0, err
	}
	cmd.Stderr = os.Stderr
	t := time.Now()
	err = cmd.Run()
	return time.Since(t), err
}

// throughputRounds is how many times each throughput is measured.
const throughputRounds = 5

func median(x []float64) float64 {
	slices.Sort(x)
	return x[len(x)/2]
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func run(duration time.Duration, senders, launches int, idle, gap time.Duration) error {
	dir, err := os.MkdirTemp("", "instance-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Interrupted, the children end with their standard input, or with
	// the signal: only the directory would stay behind.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer func() {
		signal.Stop(sig)
		close(sig)
	}()
	go func() {
		if s, ok := <-sig; ok {
			os.RemoveAll(dir)
			fmt.Fprintln(os.Stderr, "bench:", s)
			os.Exit(1)
		}
	}()

	server, err := start("server", dir)
	if err != nil {
		return err
	}
	defer server.stop()

	latency := map[string]stats{}
	calls := map[string]float64{} // system calls per operation, where counted
	rate := map[string]float64{}  // operations per second
	for _, kind := range []string{"primary", "primary-fifo"} {
		p, err := start(kind, dir)
		if err != nil {
			return err
		}
		if n, ok := syscallsPer("count-handoff", dir); ok {
			calls[kind] = n
		}
		socket := func() (func() error, error) { return nil, baseline.Exchange(dir) }
		h, s, err := samplePair(duration, 0, acquire, socket)
		if err != nil {
			return err
		}
		latency[kind] = summarize(h)
		latency[kind+"-socket"] = summarize(s)
		if kind == "primary" {
			h, s, err := samplePair(duration, gap, acquire, socket)
			if err != nil {
				return err
			}
			latency["idle"], latency["idle-socket"] = summarize(h), summarize(s)
			if h, s, err = sampleBusy(dir, duration, gap, acquire, socket); err != nil {
				return err
			}
			latency["busy"], latency["busy-socket"] = summarize(h), summarize(s)
			var sec, hello []time.Duration
			for range launches {
				d, err := launch("secondary", dir)
				if err != nil {
					return err
				}
				sec = append(sec, d)
				if d, err = launch("hello", dir); err != nil {
					return err
				}
				hello = append(hello, d)
			}
			latency["secondary-process"], latency["hello-process"] = summarize(sec), summarize(hello)
			// Rounds of each by turns, as for the latency, and the median
			// of each: a round's figure moves with the machine by more than
			// the difference measured.
			var hr, sr []float64
			for range throughputRounds {
				h, err := throughputProcs("sender-handoff", dir, senders, duration/2)
				if err != nil {
					return err
				}
				s, err := throughputProcs("sender-socket", dir, senders, duration/2)
				if err != nil {
					return err
				}
				hr, sr = append(hr, h), append(sr, s)
			}
			rate["handoff"], rate["socket"] = median(hr), median(sr)
			if rate["handoff-goroutines"], err = throughput(senders, duration, handoff); err != nil {
				return err
			}
			if rate["socket-goroutines"], err = throughput(senders, duration, func() error { return baseline.Exchange(dir) }); err != nil {
				return err
			}
		}
		if err := p.stop(); err != nil {
			return err
		}
	}

	if n, ok := syscallsPer("count-socket", dir); ok {
		calls["socket"] = n
	}
	idleCPU, err := idlePrimary(dir, idle)
	if err != nil {
		return err
	}

	h, s := latency["primary"], latency["primary-socket"]
	ph, ps := latency["primary-fifo"], latency["primary-fifo-socket"]
	sec, hello := latency["secondary-process"], latency["hello-process"]
	hs, ss := rate["handoff"], rate["socket"]
	hg, sg := rate["handoff-goroutines"], rate["socket-goroutines"]
	fmt.Printf("instance bench: %s/%s, %d CPUs, %s\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	fmt.Printf("%-38s %12s %12s\n", "", "median", "p99")
	bell, portable := doorbells()
	fmt.Printf("%-38s %10.1fµs %10.1fµs\n", "handoff ("+bell+" doorbell)", us(h.median), us(h.p99))
	fmt.Printf("%-38s %10.1fµs %10.1fµs\n", "handoff ("+portable+" doorbell)", us(ph.median), us(ph.p99))
	fmt.Printf("%-38s %10.1fµs %10.1fµs\n", baseline.Name+" round trip", us(s.median), us(s.p99))
	ih, is := latency["idle"], latency["idle-socket"]
	fmt.Printf("%-38s %10.1fµs %10.1fµs\n", fmt.Sprintf("handoff after %v idle", gap), us(ih.median), us(ih.p99))
	fmt.Printf("%-38s %10.1fµs %10.1fµs\n", fmt.Sprintf("%s after %v idle", baseline.Name, gap), us(is.median), us(is.p99))
	bh, bs := latency["busy"], latency["busy-socket"]
	fmt.Printf("%-38s %10.1fµs %10.1fµs\n", fmt.Sprintf("handoff, %d busy processes", runtime.NumCPU()), us(bh.median), us(bh.p99))
	fmt.Printf("%-38s %10.1fµs %10.1fµs\n", fmt.Sprintf("%s, %d busy processes", baseline.Name, runtime.NumCPU()), us(bs.median), us(bs.p99))
	fmt.Printf("%-38s %10.2fms %10.2fms\n", "secondary process, start to exit", ms(sec.median), ms(sec.p99))
	fmt.Printf("%-38s %10.2fms %10.2fms\n", "hello process, start to exit", ms(hello.median), ms(hello.p99))
	fmt.Printf("%-38s %10.0f/s\n", fmt.Sprintf("handoff throughput, %d processes", senders), hs)
	fmt.Printf("%-38s %10.0f/s\n", fmt.Sprintf("%s throughput, %d processes", baseline.Name, senders), ss)
	fmt.Printf("%-38s %10.0f/s\n", fmt.Sprintf("handoff throughput, %d goroutines", senders), hg)
	fmt.Printf("%-38s %10.0f/s\n", fmt.Sprintf("%s throughput, %d goroutines", baseline.Name, senders), sg)
	fmt.Printf("%-38s %10.1fms\n", fmt.Sprintf("idle primary CPU in %v", idle), ms(idleCPU))
	for _, c := range []struct{ key, name string }{
		{"primary", "handoff (" + bell + " doorbell)"},
		{"primary-fifo", "handoff (" + portable + " doorbell)"},
		{"socket", baseline.Name + " round trip"},
	} {
		if n, ok := calls[c.key]; ok {
			fmt.Printf("%-38s %10.1f\n", "system calls, "+c.name, n)
		}
	}
	fmt.Println()

	fmt.Printf("handoff_latency_us: median=%.1f p99=%.1f\n", us(h.median), us(h.p99))
	fmt.Printf("socket_latency_us: median=%.1f p99=%.1f\n", us(s.median), us(s.p99))
	fmt.Printf("handoff_vs_socket_latency_ratio: %.2f\n", us(h.median)/us(s.median))
	fmt.Printf("secondary_process_ms: median=%.2f\n", ms(sec.median))
	fmt.Printf("hello_process_ms: median=%.2f\n", ms(hello.median))
	fmt.Printf("secondary_vs_hello_process_ratio: %.2f\n", ms(sec.median)/ms(hello.median))
	fmt.Printf("throughput_msgs_per_s: handoff=%.0f socket=%.0f senders=%d\n", hs, ss, senders)
	fmt.Printf("throughput_vs_socket_ratio: %.2f\n", hs/ss)
	// Watched for idle (by default 10 s), the line is for 10 s.
	fmt.Printf("idle_primary_cpu_ms_10s: %.0f\n", ms(idleCPU)*float64(10*time.Second)/float64(idle))
	fmt.Printf("portable_handoff_latency_us: median=%.1f p99=%.1f\n", us(ph.median), us(ph.p99))
	fmt.Printf("portable_socket_latency_us: median=%.1f p99=%.1f\n", us(ps.median), us(ps.p99))
	fmt.Printf("portable_handoff_vs_socket_latency_ratio: %.2f\n", us(ph.median)/us(ps.median))
	return nil
}

// doorbells names the doorbell of the main run and of the portable one,
// which the internal switch selects on Linux alone.
func doorbells() (main, portable string) {
	switch runtime.GOOS {
	case "linux":
		return "futex", "FIFO"
	case "windows":
		return "event", "event"
	}
	return "FIFO", "FIFO"
}

// idlePrimary starts a primary, leaves it alone for idle, and returns the
// CPU time it used meanwhile: as the system counts it where this process
// can ask (Linux, Windows), else as the primary reports it, which then
// counts its waking up at the end as well (here 0.1 to 0.3 ms, more on
// a VM than the idle seconds, which cost nothing).
func idlePrimary(dir string, idle time.Duration) (time.Duration, error) {
	cmd, err := command("idle", dir)
	if err != nil {
		return 0, err
	}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var report strings.Builder
	cmd.Stderr = &report
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		return 0, fmt.Errorf("idle primary did not start: %q %v", line, err)
	}
	// The primary wrote its line and is about to wait: let it.
	time.Sleep(100 * time.Millisecond)
	before, counted := childCPU(cmd.Process)
	time.Sleep(idle)
	after, counted2 := childCPU(cmd.Process)
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return 0, fmt.Errorf("idle primary: %v: %s", err, report.String())
	}
	if counted && counted2 {
		return after - before, nil
	}
	var n time.Duration
	if _, err := fmt.Sscan(report.String(), &n); err != nil {
		return 0, fmt.Errorf("idle primary reported %q", report.String())
	}
	return n, nil
}
