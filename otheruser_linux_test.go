package instance

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Another local user must not read forwarded arguments, inject messages or
// squat the name of a per-user instance. The test process, root in CI, is
// the owner; an "intruder" child runs as nobody (uid and gid 65534), since
// root passes every permission check. The owner uses the default per-user
// location, steered by $TMPDIR and $XDG_RUNTIME_DIR into a sticky,
// world-writable directory that plays /tmp.

const (
	nobody  = 65534
	envPlan = "INSTANCE_TEST_PLAN" // the intruder's plan, as JSON
)

// intruderPlan tells the intruder whom to attack and how.
type intruderPlan struct {
	Actions []string // attacks (reported as ATTEMPT lines) and squats (SQUAT lines)
	Dir     string   // the owner's per-user directory
	Base    string   // the owner's file names in Dir, without extension
	Tmp     string   // the shared temp dir
	Victim  string   // a file of the owner's, for symbolic links to point at
	PID     int      // the owner's process
	FD      int      // its descriptor of the lock file
	Map     string   // its mapping of the region, as named in /proc/PID/map_files
	Secret  string   // an argument in flight
}

func (p *intruderPlan) path(ext string) string { return filepath.Join(p.Dir, p.Base+ext) }

// intruderAttacks each try one way in; ok reports that it got in.
var intruderAttacks = map[string]func(p *intruderPlan) (ok bool, detail string){
	"list-dir": func(p *intruderPlan) (bool, string) {
		names, err := os.ReadDir(p.Dir)
		return result(err, fmt.Sprintf("%d names", len(names)))
	},
	"read-region": func(p *intruderPlan) (bool, string) {
		b, err := os.ReadFile(p.path(".lock"))
		return result(err, fmt.Sprintf("read %d bytes, secret seen: %v", len(b), p.Secret != "" && bytes.Contains(b, []byte(p.Secret))))
	},
	"map-region": func(p *intruderPlan) (bool, string) {
		f, err := os.OpenFile(p.path(".lock"), os.O_RDWR, 0)
		if err != nil {
			return result(err, "")
		}
		defer f.Close()
		b, err := unix.Mmap(int(f.Fd()), 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err == nil {
			unix.Munmap(b)
		}
		return true, fmt.Sprintf("opened read-write; mmap: %v", err)
	},
	"write-region": func(p *intruderPlan) (bool, string) {
		f, err := os.OpenFile(p.path(".lock"), os.O_WRONLY, 0)
		if err != nil {
			return result(err, "")
		}
		defer f.Close()
		_, err = f.WriteAt([]byte("intruder"), 64)
		return true, fmt.Sprintf("opened for writing; write: %v", err)
	},
	"truncate-region": func(p *intruderPlan) (bool, string) {
		return result(unix.Truncate(p.path(".lock"), 0), "truncated")
	},
	"flock-region": func(p *intruderPlan) (bool, string) {
		f, err := os.Open(p.path(".lock"))
		if err != nil {
			return result(err, "")
		}
		defer f.Close()
		return true, fmt.Sprintf("opened; flock: %v", unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB))
	},
	"ring-bell":  func(p *intruderPlan) (bool, string) { return ring(p.path(".bell")) },
	"ring-serve": func(p *intruderPlan) (bool, string) { return ring(p.path(".serve")) },
	"ring-slot":  func(p *intruderPlan) (bool, string) { return ring(p.path(".s00")) },
	"plant-bell": func(p *intruderPlan) (bool, string) {
		return result(unix.Mkfifo(p.path(".bell"), 0o666), "made a FIFO")
	},
	"plant-serve": func(p *intruderPlan) (bool, string) {
		return result(unix.Mkfifo(p.path(".serve"), 0o666), "made a FIFO")
	},
	"plant-lock": func(p *intruderPlan) (bool, string) {
		f, err := os.OpenFile(p.path(".lock"), os.O_CREATE|os.O_WRONLY, 0o666)
		if err == nil {
			f.Close()
		}
		return result(err, "created or opened")
	},
	"link-lock": func(p *intruderPlan) (bool, string) {
		return result(os.Symlink(p.Victim, p.path(".lock")), "linked")
	},
	"rename-dir": func(p *intruderPlan) (bool, string) {
		// To put a directory of its own in the owner's place.
		return result(os.Rename(p.Dir, filepath.Join(p.Tmp, "moved-by-nobody")), "moved the directory")
	},
	"chmod-dir": func(p *intruderPlan) (bool, string) { return result(os.Chmod(p.Dir, 0o777), "opened the directory") },
	"proc-fd": func(p *intruderPlan) (bool, string) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/fd/%d", p.PID, p.FD))
		if err == nil {
			f.Close()
		}
		return result(err, "opened the owner's descriptor")
	},
	"proc-map-files": func(p *intruderPlan) (bool, string) {
		f, err := os.Open(fmt.Sprintf("/proc/%d/map_files/%s", p.PID, p.Map))
		if err == nil {
			f.Close()
		}
		return result(err, "opened the owner's mapping")
	},
	"inherited-fd": func(p *intruderPlan) (bool, string) {
		fds, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return false, err.Error()
		}
		for _, fd := range fds {
			if l, _ := os.Readlink("/proc/self/fd/" + fd.Name()); strings.HasPrefix(l, p.Dir) {
				return true, "inherited " + l
			}
		}
		return false, fmt.Sprintf("none of %d descriptors", len(fds))
	},
	"lib-dir": func(p *intruderPlan) (bool, string) {
		inst, err := Acquire(testAppID, WithDir(p.Dir), WithArgs([]string{"intruder"}), WithTimeout(2*time.Second))
		if err != nil {
			return false, err.Error()
		}
		defer inst.Release()
		return true, fmt.Sprintf("primary: %v", inst.IsPrimary())
	},
	"lib-user": func(p *intruderPlan) (bool, string) {
		// The same application, run by another user: its own instance.
		inst, err := Acquire(testAppID, WithArgs([]string{"intruder"}), WithTimeout(2*time.Second))
		if err != nil {
			return false, err.Error()
		}
		defer inst.Release()
		return !inst.IsPrimary(), fmt.Sprintf("primary: %v", inst.IsPrimary())
	},
}

func result(err error, success string) (bool, string) {
	if err != nil {
		return false, err.Error()
	}
	return true, success
}

func ring(path string) (bool, string) {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, (&os.PathError{Op: "open", Path: path, Err: err}).Error()
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte{1})
	return true, fmt.Sprintf("opened the bell; write: %v", err)
}

// intruderSquats prepare, before the owner starts, what it might take for
// its own. They should all work: squatting in the shared temp dir is
// allowed; using the squat is the owner's mistake to avoid.
var intruderSquats = map[string]func(p *intruderPlan) error{
	"dir-0700": func(p *intruderPlan) error { return os.Mkdir(p.Dir, 0o700) },
	"dir-0777": func(p *intruderPlan) error { return openDir(p.Dir, p, plantLink) },
	"dir-symlink": func(p *intruderPlan) error {
		elsewhere := filepath.Join(p.Tmp, "nobody-elsewhere")
		if err := openDir(elsewhere, p, plantLink); err != nil {
			return err
		}
		return os.Symlink(elsewhere, p.Dir)
	},
	"dir-dangling": func(p *intruderPlan) error {
		return os.Symlink(filepath.Join(p.Tmp, "nobody-later"), p.Dir)
	},
	"dir-file": func(p *intruderPlan) error { return os.WriteFile(p.Dir, []byte("nobody"), 0o666) },
	"dir-fifo": func(p *intruderPlan) error { return unix.Mkfifo(p.Dir, 0o666) },
	// $XDG_RUNTIME_DIR names a directory of the intruder's (kept by sudo
	// or su, say), with the owner's directory and files planted inside.
	"xdg-foreign": func(p *intruderPlan) error {
		xdg := filepath.Join(p.Tmp, "xdg")
		if err := os.Mkdir(xdg, 0o700); err != nil {
			return err
		}
		return openDir(filepath.Join(xdg, "go-instance"), p, plantLink)
	},
	"xdg-symlink": func(p *intruderPlan) error {
		real := filepath.Join(p.Tmp, "nobody-xdg")
		if err := os.Mkdir(real, 0o700); err != nil {
			return err
		}
		if err := openDir(filepath.Join(real, "go-instance"), p, plantFIFO); err != nil {
			return err
		}
		return os.Symlink(real, filepath.Join(p.Tmp, "xdg"))
	},
	// $XDG_RUNTIME_DIR is the owner's but open to all (a mistake), and the
	// intruder got in first.
	"xdg-loose": func(p *intruderPlan) error {
		return openDir(filepath.Join(p.Tmp, "xdg", "go-instance"), p, plantFIFO)
	},
}

// openDir makes dir open to all and plants files in it.
func openDir(dir string, p *intruderPlan, plant func(dir string, p *intruderPlan) error) error {
	if err := os.Mkdir(dir, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o777); err != nil { // past the umask
		return err
	}
	return plant(dir, p)
}

// plantLink plants the lock as a link to the victim and FIFO bells of the
// intruder's.
func plantLink(dir string, p *intruderPlan) error {
	name := filepath.Join(dir, p.Base)
	if err := os.Symlink(p.Victim, name+".lock"); err != nil {
		return err
	}
	for _, ext := range []string{".bell", ".s00"} {
		if err := unix.Mkfifo(name+ext, 0o666); err != nil {
			return err
		}
	}
	return nil
}

// plantFIFO plants a FIFO where the lock file belongs and a link to the
// victim as the bell.
func plantFIFO(dir string, p *intruderPlan) error {
	name := filepath.Join(dir, p.Base)
	if err := unix.Mkfifo(name+".lock", 0o666); err != nil {
		return err
	}
	return os.Symlink(p.Victim, name+".bell")
}

func init() { childRoles["intruder"] = intruderMain }

// intruderMain runs the plan as the intruder and reports each action:
//
//	ATTEMPT <name> blocked|SUCCEEDED <detail>
//	SQUAT <name> ok|<error>
func intruderMain() int {
	var p intruderPlan
	if err := json.Unmarshal([]byte(os.Getenv(envPlan)), &p); err != nil {
		fmt.Println("ERROR plan:", err)
		return 0
	}
	for _, a := range p.Actions {
		if squat, ok := intruderSquats[a]; ok {
			status := "ok"
			if err := squat(&p); err != nil {
				status = err.Error()
			}
			fmt.Println("SQUAT", a, status)
			continue
		}
		attack, ok := intruderAttacks[a]
		if !ok {
			fmt.Println("ERROR unknown action", a)
			continue
		}
		in, detail := attack(&p)
		status := "blocked"
		if in {
			status = "SUCCEEDED"
		}
		fmt.Println("ATTEMPT", a, status, strings.ReplaceAll(detail, "\n", " "))
	}
	return 0
}

// otherUser is one run of TestOtherUser: the intruder's binary and the
// tally of attempts.
type otherUser struct {
	bin                 string // a copy of the test binary that nobody can run
	attempts, successes int
}

// run starts the intruder with plan and counts its attempts.
func (o *otherUser) run(t *testing.T, p *intruderPlan) {
	t.Helper()
	js, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.bin, "-test.run=^$")
	cmd.Dir = filepath.Dir(o.bin)
	cmd.Env = []string{envRole + "=intruder", envPlan + "=" + string(js), "TMPDIR=" + p.Tmp, "PATH=/usr/bin:/bin",
		"GORACE=atexit_sleep_ms=0"} // else a -race binary sleeps a second as it exits
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("intruder: %v\n%s", err, stderr.Bytes())
	}
	want := len(p.Actions)
	s := bufio.NewScanner(bytes.NewReader(out))
	for s.Scan() {
		f := strings.SplitN(s.Text(), " ", 4)
		switch {
		case len(f) >= 3 && f[0] == "ATTEMPT":
			want--
			o.attempts++
			if f[2] != "blocked" {
				o.successes++
				t.Errorf("as uid %d, %s succeeded: %s", nobody, f[1], s.Text())
			} else {
				t.Logf("%s blocked: %s", f[1], strings.Join(f[3:], " "))
			}
		case len(f) >= 3 && f[0] == "SQUAT":
			want--
			if f[2] != "ok" {
				t.Fatalf("could not set up the squat: %s", s.Text())
			}
		default:
			t.Errorf("intruder: %q", s.Text())
		}
	}
	if want != 0 {
		t.Fatalf("intruder reported %d actions of %d:\n%s%s", len(p.Actions)-want, len(p.Actions), out, stderr.Bytes())
	}
}

// sharedTmp makes a sticky directory open to all, like /tmp, and points
// the per-user location of this process at it.
func sharedTmp(t *testing.T) string {
	t.Helper()
	tmp, err := os.MkdirTemp("", "inst-users")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if err := os.Chmod(tmp, os.ModeSticky|0o777); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", tmp)
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("DISPLAY", "") // the session is the user: the same file names as WithDir
	t.Setenv("WAYLAND_DISPLAY", "")
	t.Setenv("FLATPAK_ID", "")
	t.Setenv("SNAP_INSTANCE_NAME", "")
	return tmp
}

// victim is a file of the owner's that a squat links to: it must stay as
// it is.
func victim(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "inst-victim") // not in the shared dir
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	v := filepath.Join(dir, "victim")
	if err := os.WriteFile(v, []byte("victim"), 0o600); err != nil {
		t.Fatal(err)
	}
	return v
}

func checkVictim(t *testing.T, v string) bool {
	t.Helper()
	b, err := os.ReadFile(v)
	if err != nil || string(b) != "victim" {
		t.Errorf("the victim %s was changed: now %d bytes, %v", v, len(b), err)
		return false
	}
	return true
}

// checkOwnedPrimary reports whether inst is the primary with its files
// where only the owner can reach them: a real directory of root's, mode
// 0700, holding a lock file of root's, mode 0600, with one link.
func checkOwnedPrimary(t *testing.T, inst *Instance) bool {
	t.Helper()
	if !inst.IsPrimary() {
		t.Error("the owner became a secondary: something else holds its name")
		return false
	}
	dir := filepath.Dir(inst.files.prefix)
	parent, err1 := filepath.EvalSymlinks(filepath.Dir(dir))
	real, err2 := filepath.EvalSymlinks(dir)
	if err1 != nil || err2 != nil || real != filepath.Join(parent, filepath.Base(dir)) {
		t.Errorf("the owner's directory %s resolves to %s (%v, %v)", dir, real, err1, err2)
		return false
	}
	for _, c := range []struct {
		path string
		kind uint32
		mode uint32
	}{{dir, unix.S_IFDIR, 0o700}, {inst.files.prefix + ".lock", unix.S_IFREG, 0o600}} {
		var st unix.Stat_t
		if err := unix.Lstat(c.path, &st); err != nil {
			t.Error(err)
			return false
		}
		if st.Mode&unix.S_IFMT != c.kind || st.Mode&0o7777 != c.mode || st.Uid != 0 || st.Nlink != 1 && c.kind == unix.S_IFREG {
			t.Errorf("the owner uses %s: mode %#o, owner %d, links %d", c.path, st.Mode, st.Uid, st.Nlink)
			return false
		}
	}
	return true
}

// ownerFD finds this process's descriptor of path and the name of its
// mapping of it in /proc/self/map_files, which the intruder tries to reach
// through /proc; root opening them shows that they are there.
func ownerFD(t *testing.T, path string) (fd int, mapping string) {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fd = -1
	for _, e := range fds {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); l == path {
			fd, _ = strconv.Atoi(e.Name())
		}
	}
	maps, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	for l := range strings.Lines(string(maps)) {
		if strings.HasSuffix(strings.TrimSpace(l), " "+path) {
			mapping, _, _ = strings.Cut(l, " ")
		}
	}
	for _, p := range []string{"/proc/self/fd/" + strconv.Itoa(fd), "/proc/self/map_files/" + mapping} {
		f, err := os.Open(p)
		if err != nil {
			t.Fatalf("the owner cannot open its own %s: %v", p, err)
		}
		f.Close()
	}
	return fd, mapping
}

// Attacks on the running owner, each by a process of nobody's.
var runningAttacks = []string{
	"list-dir", "read-region", "map-region", "write-region", "truncate-region",
	"flock-region", "ring-bell", "ring-serve", "ring-slot", "proc-fd", "proc-map-files",
	"inherited-fd", "lib-dir", "lib-user",
}

// Between two runs of the owner, its directory and lock file stay; the
// intruder tries to plant, move and lock them.
var betweenRunsAttacks = []string{
	"list-dir", "plant-lock", "link-lock", "plant-bell", "plant-serve", "flock-region", "rename-dir", "chmod-dir",
}

// TestOtherUser runs, as another user, every attack this test knows on a
// per-user instance of root's, and prints how many succeeded (none may).
func TestOtherUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to run the attacks as uid 65534 (root itself passes every permission check)")
	}
	o := &otherUser{bin: nobodyBinary(t)}
	t.Run("running", func(t *testing.T) {
		forEachBell(t, func(t *testing.T, bell uint32) { o.running(t, bell) })
	})
	t.Run("between-runs", o.betweenRuns)
	t.Run("squat", o.squats)
	t.Run("machine-link", o.machineLink)
	summary(t, "other_user_attempts=%d successes=%d", o.attempts, o.successes)
}

// nobodyBinary copies the test binary where nobody can run it: the go
// tool builds it in a directory of root's, mode 0700.
func nobodyBinary(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "inst-bin")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	bin := filepath.Join(dir, "instance.test")
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(dst, src)
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// running attacks the owner's primary while it handles a message with a
// secret, and reads again after it answered.
func (o *otherUser) running(t *testing.T, bell uint32) {
	tmp := sharedTmp(t)
	inst, err := Acquire(testAppID, withBell(bell), WithArgs(nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Release() })
	checkOwnedPrimary(t, inst) // and attack it even if not
	dir := filepath.Join(tmp, "go-instance-0")
	if inst.files.prefix != prefixFor(t, dir) {
		t.Fatalf("the owner's files are %s, not %s: the squats would miss", inst.files.prefix, prefixFor(t, dir))
	}
	secret := fmt.Sprintf("secret-%d-%d", os.Getpid(), time.Now().UnixNano())
	inFlight, answer := make(chan struct{}), make(chan struct{})
	reply := sync.OnceFunc(func() { close(answer) }) // also when the test stops early
	var mu sync.Mutex
	var others []*Message
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() {
		defer close(served)
		inst.Serve(ctx, func(m *Message) Reply {
			if len(m.Args) == 2 && m.Args[1] == secret {
				close(inFlight)
				<-answer
			} else {
				mu.Lock()
				others = append(others, m)
				mu.Unlock()
			}
			return Reply{Code: 3, Data: replyFor(m.Args)}
		})
	}()
	defer func() {
		reply()
		cancel()
		<-served
		inst.Release()
		for _, m := range others {
			o.successes++
			t.Errorf("the owner received a message from pid %d: %q", m.PID, m.Args)
		}
	}()
	sender := startChild(t, childOpts{dir: dir, bell: bell, args: []string{"secret", secret}})
	select {
	case <-inFlight:
	case <-time.After(20 * time.Second):
		t.Fatal("the secret message did not arrive")
	}
	fd, mapping := ownerFD(t, inst.files.prefix+".lock")
	p := &intruderPlan{
		Actions: runningAttacks,
		Dir:     dir, Base: filepath.Base(inst.files.prefix), Tmp: tmp,
		PID: os.Getpid(), FD: fd, Map: mapping, Secret: secret,
	}
	o.run(t, p)
	reply()
	checkSecondary(t, sender, sender.next(20*time.Second))
	p.Actions = []string{"read-region", "map-region"}
	o.run(t, p)
}

// betweenRuns lets a primary run and exit, then attacks what it left, and
// checks that the next primary is the owner's.
func (o *otherUser) betweenRuns(t *testing.T) {
	v := victim(t)
	tmp := sharedTmp(t)
	inst, err := Acquire(testAppID, withBell(bellFIFO), WithArgs(nil))
	if err != nil {
		t.Fatal(err)
	}
	prefix := inst.files.prefix
	inst.Release()
	p := &intruderPlan{Actions: betweenRunsAttacks, Dir: filepath.Dir(prefix), Base: filepath.Base(prefix), Tmp: tmp, Victim: v}
	o.run(t, p)
	inst, err = Acquire(testAppID, withBell(bellFIFO), WithArgs(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Release()
	if !checkOwnedPrimary(t, inst) || inst.files.prefix != prefix || !checkVictim(t, v) {
		o.successes++
	}
}

// squats lets the intruder prepare the owner's location before the owner
// first starts. The owner must then route around it, with files that only
// it can reach, or refuse with ErrLockUnavailable naming what is wrong;
// each squat counts as an attempt.
func (o *otherUser) squats(t *testing.T) {
	for _, tc := range []struct {
		squat string
		xdg   string // $XDG_RUNTIME_DIR under the shared dir
		xdgOK bool   // the test makes it as the owner's, mode 0777
	}{
		{squat: "dir-0700"},
		{squat: "dir-0777"},
		{squat: "dir-symlink"},
		{squat: "dir-dangling"},
		{squat: "dir-file"},
		{squat: "dir-fifo"},
		{squat: "xdg-foreign", xdg: "xdg"},
		{squat: "xdg-symlink", xdg: "xdg"},
		{squat: "xdg-loose", xdg: "xdg", xdgOK: true},
	} {
		t.Run(tc.squat, func(t *testing.T) {
			v := victim(t)
			tmp := sharedTmp(t)
			dir := filepath.Join(tmp, "go-instance-0")
			if tc.xdg != "" {
				t.Setenv("XDG_RUNTIME_DIR", filepath.Join(tmp, tc.xdg))
			}
			if tc.xdgOK {
				if err := os.Mkdir(filepath.Join(tmp, tc.xdg), 0o777); err != nil {
					t.Fatal(err)
				}
				os.Chmod(filepath.Join(tmp, tc.xdg), 0o777)
			}
			p := &intruderPlan{Actions: []string{tc.squat}, Dir: dir, Base: filepath.Base(prefixFor(t, dir)), Tmp: tmp, Victim: v}
			o.run(t, p)
			o.attempts++
			inst, err := Acquire(testAppID, WithArgs(nil), WithTimeout(2*time.Second))
			if err != nil {
				if !errors.Is(err, ErrLockUnavailable) || !strings.Contains(err.Error(), tmp) ||
					!containsAny(err.Error(), "owned by uid 65534", "symbolic link", "not a directory", "not a regular file", "mode") {
					t.Errorf("refused with an unclear error: %v", err)
				}
				if !checkVictim(t, v) {
					o.successes++
				}
				t.Logf("refused: %v", err)
				return
			}
			defer inst.Release()
			t.Logf("routed around to %s", filepath.Dir(inst.files.prefix))
			if !checkOwnedPrimary(t, inst) || !checkVictim(t, v) {
				o.successes++
				return
			}
			// The way around must be closed to the intruder too.
			p.Actions = []string{"list-dir", "read-region", "write-region", "lib-dir"}
			p.Dir = filepath.Dir(inst.files.prefix)
			o.run(t, p)
		})
	}
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

func init() { childRoles["link-squatter"] = linkSquatterMain }

// linkSquatterMain, as the intruder, opens the owner's ScopeMachine lock
// file (open to all), links it into a directory of its own where the
// owner's per-user files would be, and, once the owner has removed the
// file's first name (as /tmp's cleaner would), locks it and serves as the
// owner's primary there until its stdin closes:
//
//	LINKED, then PRIMARY, then STOLE <args> for each message
func linkSquatterMain() int {
	var p intruderPlan
	if err := json.Unmarshal([]byte(os.Getenv(envPlan)), &p); err != nil {
		fmt.Println("ERROR plan:", err)
		return 0
	}
	if err := openDir(p.Dir, &p, func(string, *intruderPlan) error { return nil }); err != nil {
		fmt.Println("ERROR", err)
		return 0
	}
	fd, err := unix.Open(p.Victim, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		fmt.Println("ERROR", err)
		return 0
	}
	if err := unix.Link(p.Victim, p.path(".lock")); err != nil {
		fmt.Println("ERROR link:", err)
		return 0
	}
	fmt.Println("LINKED")
	in := bufio.NewReader(os.Stdin)
	in.ReadString('\n')
	cfg, err := newConfig(testAppID, []Option{WithDir(p.Dir)})
	if err != nil {
		fmt.Println("ERROR", err)
		return 0
	}
	f := &files{prefix: filepath.Join(p.Dir, p.Base), perm: 0o600, size: -1}
	f.held = &flockLock{fd: fd, path: p.path(".lock")}
	if ok, err := f.held.TryLock(); !ok || err != nil {
		fmt.Println("ERROR lock:", ok, err)
		return 0
	}
	inst, err := becomePrimary(cfg, f, f.held)
	if err != nil {
		fmt.Println("ERROR", err)
		return 0
	}
	fmt.Println("PRIMARY")
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		in.ReadString('\n')
		cancel()
	}()
	inst.Serve(ctx, func(m *Message) Reply {
		fmt.Println("STOLE", strings.Join(m.Args, " "))
		return Reply{Code: 42}
	})
	return 0
}

// machineLink: the owner's ScopeMachine lock file is open to all users, by
// design. Linked into a directory of the intruder's in the place of the
// owner's per-user directory, with its first name gone, it is a file of
// the owner's with one link that the intruder holds open and locks: the
// owner's per-user launch must not take it on trust.
func (o *otherUser) machineLink(t *testing.T) {
	tmp := sharedTmp(t) // on /tmp's file system, where ScopeMachine's files are
	m, err := Acquire(testAppID, WithScope(ScopeMachine), WithKey(filepath.Base(tmp)), WithArgs(nil))
	if err != nil {
		t.Fatal(err)
	}
	machine := m.files.lockPath()
	m.Release()
	t.Cleanup(func() { os.Remove(machine) })
	dir := filepath.Join(tmp, "go-instance-0")
	p := &intruderPlan{Dir: dir, Base: filepath.Base(prefixFor(t, dir)), Tmp: tmp, Victim: machine}
	js, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(o.bin, "-test.run=^$")
	cmd.Dir = filepath.Dir(o.bin)
	cmd.Env = []string{envRole + "=link-squatter", envPlan + "=" + string(js), "TMPDIR=" + tmp, "PATH=/usr/bin:/bin", "GORACE=atexit_sleep_ms=0"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	lines := make(chan string, 16)
	go func() {
		defer close(lines)
		for s := bufio.NewScanner(stdout); s.Scan(); {
			lines <- s.Text()
		}
	}()
	next := func() string {
		select {
		case l := <-lines:
			return l
		case <-time.After(20 * time.Second):
			return "(nothing)"
		}
	}
	if l := next(); l != "LINKED" {
		t.Fatalf("intruder: %q, want LINKED", l)
	}
	if err := os.Remove(machine); err != nil {
		t.Fatal(err)
	}
	stdin.Write([]byte("go\n"))
	if l := next(); l != "PRIMARY" {
		t.Fatalf("intruder: %q, want PRIMARY", l)
	}
	o.attempts++
	secret := fmt.Sprintf("secret-%d", time.Now().UnixNano())
	inst, err := Acquire(testAppID, WithArgs([]string{secret}), WithTimeout(3*time.Second))
	if err == nil {
		defer inst.Release()
	}
	stdin.Close()
	var stole []string
	for l := range lines {
		stole = append(stole, l)
	}
	switch {
	case len(stole) > 0:
		o.successes++
		t.Errorf("the intruder got the owner's message: %q", stole)
	case err == nil && !inst.IsPrimary():
		o.successes++
		t.Errorf("the owner's launch was the intruder's secondary (reply %d)", inst.Reply().Code)
	case err != nil:
		if !errors.Is(err, ErrLockUnavailable) {
			t.Errorf("refused with %v, want ErrLockUnavailable", err)
		}
		t.Logf("refused: %v", err)
	default:
		t.Logf("primary in %s", filepath.Dir(inst.files.prefix))
	}
}
