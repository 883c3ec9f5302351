package shm_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/go-instance/instance/shm"
)

// The Value tests run on every system with named regions: on Linux and
// the other Unix systems, and on Windows (under Wine in CI).

func init() {
	childRoles["value-add"] = childValueAdd
	childRoles["value-write"] = childValueWrite
	childRoles["value-read"] = childValueRead
	childRoles["value-hold"] = childValueHold
	childRoles["value-wait"] = childValueWait
	childRoles["value-die-publishing"] = childValueDiePublishing
	childRoles["value-pointer"] = childValuePointer
}

// counters is shared by the processes of TestValueUpdateCrossProcess.
type counters struct {
	Total uint64
	Each  [2]uint32 // per child
	Flag  bool
}

// uniform is a value whose words must always be equal; a torn copy would
// mix two of them.
type uniform struct {
	W [16]uint64
}

func (u *uniform) set(n uint64) {
	for i := range u.W {
		u.W[i] = n
	}
}

// torn reports whether the words of u differ.
func (u *uniform) torn() bool {
	for _, w := range u.W {
		if w != u.W[0] {
			return true
		}
	}
	return false
}

// shared is a value written through Pointer in TestValuePointerCrossProcess.
type shared struct {
	Note  [32]byte
	Reply [32]byte
	Count int32
}

// newValue creates the named region of a Value[T] and the mutex of the
// same name, for this test alone, and returns the name and the Value.
func newValue[T any](t *testing.T) (string, *shm.Value[T], *shm.Region) {
	t.Helper()
	name := regionName(t)
	r, err := shm.Create(name, shm.ValueSize[T]())
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	mu, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mu.Close() })
	v, err := shm.NewValue[T](r, mu)
	if err != nil {
		t.Fatal(err)
	}
	return name, v, r
}

// openValue opens, in a child, the Value[T] of the region and mutex name.
// The region and mutex stay open for the rest of the child's life.
func openValue[T any](name string) (*shm.Value[T], *shm.Mutex, *shm.Region, error) {
	r, err := shm.Open(name)
	if err != nil {
		return nil, nil, nil, err
	}
	mu, err := shm.OpenMutex(name)
	if err != nil {
		return nil, nil, nil, err
	}
	v, err := shm.NewValue[T](r, mu)
	return v, mu, r, err
}

func expectLine(t *testing.T, c *child, want string) {
	t.Helper()
	if line := c.readLine(); line != want {
		t.Fatalf("child %s said %q, want %q\nstderr:\n%s", c.role, line, want, c.stderr)
	}
}

// childValueAdd opens the counters args[0], reports "ready", waits for
// "go", then adds 1 to the total and to its own counter args[2] through
// Update, args[1] times, and reports "done".
func childValueAdd(args []string) int {
	v, _, _, err := openValue[counters](args[0])
	if err != nil {
		return childFail("%v", err)
	}
	n, _ := strconv.Atoi(args[1])
	me, _ := strconv.Atoi(args[2])
	ready("ready")
	if line := waitForParent(); line != "go" {
		return childFail("parent said %q", line)
	}
	for range n {
		err := v.Update(func(c *counters) {
			c.Total++
			c.Each[me]++
		})
		if err != nil {
			return childFail("Update: %v", err)
		}
	}
	ready("done")
	return 0
}

// Updates of two processes exclude each other: none is lost.
func TestValueUpdateCrossProcess(t *testing.T) {
	const n = 100_000
	name, v, _ := newValue[counters](t)
	var cs [2]*child
	for i := range cs {
		cs[i] = startChild(t, "value-add", name, strconv.Itoa(n), strconv.Itoa(i))
		expectLine(t, cs[i], "ready")
	}
	for _, c := range cs {
		c.send("go")
	}
	for _, c := range cs {
		expectLine(t, c, "done")
		c.mustExit0()
	}
	got := v.Load()
	if want := (counters{Total: 2 * n, Each: [2]uint32{n, n}}); got != want {
		t.Errorf("after two processes added %d each: %+v, want %+v", n, got, want)
	}
	if *v.Pointer() != got {
		t.Errorf("Pointer sees %+v, Load %+v", *v.Pointer(), got)
	}
}

// childValueWrite opens the uniform value args[0] and publishes 1, 2, 3...
// in all its words through Update until its standard input closes or
// says "stop". It reports "writing" after the first Update.
func childValueWrite(args []string) int {
	v, _, _, err := openValue[uniform](args[0])
	if err != nil {
		return childFail("%v", err)
	}
	var stop atomic.Bool
	go func() {
		waitForParent()
		stop.Store(true)
	}()
	for n := uint64(1); !stop.Load(); n++ {
		if err := v.Update(func(u *uniform) { u.set(n) }); err != nil {
			return childFail("Update: %v", err)
		}
		if n == 1 {
			ready("writing")
		}
	}
	return 0
}

// childValueRead Loads the uniform value args[0] until it has seen it
// change args[1] times, checking each snapshot: its words are equal, and
// it never goes back. It reports "read".
func childValueRead(args []string) int {
	v, _, _, err := openValue[uniform](args[0])
	if err != nil {
		return childFail("%v", err)
	}
	changes, _ := strconv.Atoi(args[1])
	var last uint64
	loads := 0
	for seen := 0; seen < changes; loads++ {
		u := v.Load()
		if u.torn() {
			return childFail("Load %d returned a torn value: %v", loads, u.W)
		}
		switch n := u.W[0]; {
		case n < last:
			return childFail("Load %d went back from %d to %d", loads, last, n)
		case n > last:
			seen++
			last = n
		}
	}
	ready("read")
	fmt.Fprintf(os.Stderr, "reader: %d loads, %d changes, last %d\n", loads, changes, last)
	return 0
}

// Load never returns a value that a writer in another process is
// half-way through publishing.
func TestValueLoadNeverTorn(t *testing.T) {
	name, v, _ := newValue[uniform](t)
	w := startChild(t, "value-write", name)
	expectLine(t, w, "writing")
	r := startChild(t, "value-read", name, "2000")
	// The parent reads too, while the reader works.
	done := make(chan struct{})
	var parentErr error
	go func() {
		defer close(done)
		for i := 0; i < 100_000; i++ {
			if u := v.Load(); u.torn() {
				parentErr = fmt.Errorf("parent's Load returned a torn value: %v", u.W)
				return
			}
		}
	}()
	expectLine(t, r, "read")
	r.mustExit0()
	<-done
	w.send("stop")
	w.mustExit0()
	if parentErr != nil {
		t.Error(parentErr)
	}
	t.Logf("%s", r.stderr)
	if u := v.Load(); u.torn() || u.W[0] == 0 {
		t.Errorf("final value %v", u.W)
	}
}

// childValueHold takes the mutex args[0], reports "locked", and holds it
// until killed.
func childValueHold(args []string) int {
	mu, err := shm.OpenMutex(args[0])
	if err != nil {
		return childFail("%v", err)
	}
	if err := mu.Lock(); err != nil {
		return childFail("Lock: %v", err)
	}
	ready("locked")
	waitForParent()
	return 0
}

// childValueWait opens the counters args[0], checks that another process
// holds the mutex, reports "waiting", adds 1 to the total through Update
// (waiting for the mutex) and reports "updated".
func childValueWait(args []string) int {
	v, mu, _, err := openValue[counters](args[0])
	if err != nil {
		return childFail("%v", err)
	}
	if ok, err := mu.TryLock(); ok || err != nil {
		return childFail("TryLock of a mutex held by another process: %v, %v", ok, err)
	}
	ready("waiting")
	if err := v.Update(func(c *counters) { c.Total++ }); err != nil {
		return childFail("Update: %v", err)
	}
	ready("updated")
	return 0
}

// When the process holding the mutex is killed, the kernel releases it and
// a process waiting for it gets it.
func TestValueMutexHolderKilled(t *testing.T) {
	name, v, _ := newValue[counters](t)
	holder := startChild(t, "value-hold", name)
	expectLine(t, holder, "locked")
	waiter := startChild(t, "value-wait", name)
	expectLine(t, waiter, "waiting")

	if err := holder.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	holder.wait()
	if holder.cmd.ProcessState.Success() {
		t.Fatalf("holder exited by itself: %v", holder.cmd.ProcessState)
	}
	expectLine(t, waiter, "updated")
	waiter.mustExit0()
	if got := v.Load().Total; got != 1 {
		t.Errorf("total %d after the waiter's Update, want 1", got)
	}
}

// childValueDiePublishing plays a writer that dies while it publishes: it
// takes the mutex of the uniform value args[0], makes the sequence counter
// odd (offset 0 of the region, as documented), writes 99 into the first
// half of the words, reports "publishing", and waits to be killed.
func childValueDiePublishing(args []string) int {
	v, mu, r, err := openValue[uniform](args[0])
	if err != nil {
		return childFail("%v", err)
	}
	if err := mu.Lock(); err != nil {
		return childFail("Lock: %v", err)
	}
	seq := (*uint64)(unsafe.Pointer(&r.Bytes()[0]))
	atomic.AddUint64(seq, 1)
	p := v.Pointer()
	for i := range len(p.W) / 2 {
		p.W[i] = 99
	}
	ready("publishing")
	waitForParent()
	return 0
}

// A writer killed while it publishes leaves its writes as they were, but
// readers do not wait for it forever, and the next Update publishes.
func TestValueWriterKilledPublishing(t *testing.T) {
	name, v, r := newValue[uniform](t)
	if err := v.Update(func(u *uniform) { u.set(5) }); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "value-die-publishing", name)
	expectLine(t, c, "publishing")
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.wait()

	var want uniform
	want.set(5)
	for i := range len(want.W) / 2 {
		want.W[i] = 99
	}
	if got := v.Load(); got != want {
		t.Errorf("Load after the writer died: %v, want its writes as it left them: %v", got.W, want.W)
	}
	if seq := atomic.LoadUint64((*uint64)(unsafe.Pointer(&r.Bytes()[0]))); seq&1 != 0 {
		t.Errorf("sequence %d after Load repaired it, want even", seq)
	}
	if err := v.Update(func(u *uniform) { u.set(6) }); err != nil {
		t.Fatal(err)
	}
	if got := v.Load(); got.torn() || got.W[0] != 6 {
		t.Errorf("Load after an Update: %v", got.W)
	}
}

// Update too publishes over a writer that died publishing, without waiting
// for a reader to notice.
func TestValueUpdateAfterDeadWriter(t *testing.T) {
	name, v, r := newValue[uniform](t)
	c := startChild(t, "value-die-publishing", name)
	expectLine(t, c, "publishing")
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	c.wait()
	if err := v.Update(func(u *uniform) {
		if u.W[0] != 99 || u.W[len(u.W)-1] != 0 {
			t.Errorf("Update's fn got %v, want what the dead writer left", u.W)
		}
		u.set(7)
	}); err != nil {
		t.Fatal(err)
	}
	if seq := atomic.LoadUint64((*uint64)(unsafe.Pointer(&r.Bytes()[0]))); seq&1 != 0 {
		t.Errorf("sequence %d after Update, want even", seq)
	}
	if got := v.Load(); got.torn() || got.W[0] != 7 {
		t.Errorf("Load after Update: %v", got.W)
	}
}

var (
	parentNote = "written by the parent"
	childReply = "written by the child"
)

// childValuePointer opens the shared value args[0], reports "mapped",
// waits for "check", checks through Pointer that the parent's note is
// there, then writes its reply through Pointer and reports "written".
func childValuePointer(args []string) int {
	v, mu, _, err := openValue[shared](args[0])
	if err != nil {
		return childFail("%v", err)
	}
	ready("mapped")
	if line := waitForParent(); line != "check" {
		return childFail("parent said %q", line)
	}
	if err := mu.Lock(); err != nil {
		return childFail("Lock: %v", err)
	}
	p := v.Pointer()
	if got := string(p.Note[:len(parentNote)]); got != parentNote || p.Count != 1 {
		return childFail("child sees %q, count %d through Pointer, want %q, 1", got, p.Count, parentNote)
	}
	copy(p.Reply[:], childReply)
	p.Count++
	if err := mu.Unlock(); err != nil {
		return childFail("Unlock: %v", err)
	}
	ready("written")
	return 0
}

// Pointer is the shared value itself: what one process writes through it,
// another reads through it.
func TestValuePointerCrossProcess(t *testing.T) {
	name, v, _ := newValue[shared](t)
	c := startChild(t, "value-pointer", name)
	expectLine(t, c, "mapped")
	// Written after the child mapped the region: only shared memory
	// carries it.
	p := v.Pointer()
	copy(p.Note[:], parentNote)
	p.Count = 1
	c.send("check")
	expectLine(t, c, "written")
	c.mustExit0()
	if got := string(p.Reply[:len(childReply)]); got != childReply || p.Count != 2 {
		t.Errorf("parent sees %q, count %d through Pointer, want %q, 2", got, p.Count, childReply)
	}
	if got := v.Load(); got != *p {
		t.Errorf("Load %+v differs from Pointer %+v", got, *p)
	}
}

// Types for TestNewValueTypes.
type (
	inner struct {
		ID   uint32
		Name string
	}
	MyData struct {
		N     int
		Inner inner
	}
	plainInner struct {
		A [3]int16
		B complex64
	}
	plainAll struct {
		B       bool
		I       int
		I8      int8
		I16     int16
		I32     int32
		I64     int64
		U       uint
		U8      uint8
		U16     uint16
		U32     uint32
		U64     uint64
		P       uintptr
		F32     float32
		F64     float64
		C64     complex64
		C128    complex128
		Arr     [4]float64
		Nested  plainInner
		Structs [3]plainInner
		Grid    [2][3]uint8
		Empty   struct{}
		_       [5]byte
		private int64
	}
)

// newValueErr is NewValue[T] as a value, for tables.
func newValueErr[T any](r *shm.Region, mu *shm.Mutex) error {
	_, err := shm.NewValue[T](r, mu)
	return err
}

func TestNewValueTypes(t *testing.T) {
	name, _, r := newValue[[256]byte](t)
	mu, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	defer mu.Close()

	const suffix = ": only fixed-size plain data can be shared between processes"
	refused := []struct {
		newValue func(*shm.Region, *shm.Mutex) error
		want     string
	}{
		{newValueErr[struct{ P *int }], "Value[struct { P *int }]: field P is a pointer (*int)"},
		{newValueErr[struct{ U unsafe.Pointer }], "field U is an unsafe.Pointer"},
		{newValueErr[struct{ S string }], "field S is a string"},
		{newValueErr[struct{ B []byte }], "field B is a slice ([]uint8)"},
		{newValueErr[struct{ M map[int]int }], "field M is a map (map[int]int)"},
		{newValueErr[struct{ C chan int }], "field C is a channel (chan int)"},
		{newValueErr[struct{ I any }], "field I is an interface (interface {})"},
		{newValueErr[struct{ E error }], "field E is an interface (error)"},
		{newValueErr[struct{ F func() }], "field F is a func (func())"},
		{newValueErr[MyData], "shm: Value[shm_test.MyData]: field Inner.Name is a string" + suffix},
		{newValueErr[struct {
			N     int
			Items [4]struct {
				A int
				B [2]struct{ S []int }
			}
		}], "field Items[i].B[i].S is a slice ([]int)"},
		{newValueErr[struct{ inner }], "field inner.Name is a string"},
		{newValueErr[struct{ p *MyData }], "field p is a pointer (*shm_test.MyData)"},
		{newValueErr[string], "Value[string]: T is a string" + suffix},
		{newValueErr[*int], "T is a pointer (*int)"},
		{newValueErr[[2]string], "T[i] is a string"},
		{newValueErr[[2]inner], "T[i].Name is a string"},
	}
	for _, tt := range refused {
		err := tt.newValue(r, mu)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewValue: %v, want an error with %q", err, tt.want)
		}
	}

	accepted := []func(*shm.Region, *shm.Mutex) error{
		newValueErr[plainAll],
		newValueErr[plainInner],
		newValueErr[[2][3]plainInner],
		newValueErr[struct{}],
		newValueErr[bool],
		newValueErr[uintptr],
		newValueErr[complex128],
		newValueErr[struct {
			_ [0]func() // not comparable, and no data
			X int
		}],
		newValueErr[atomic.Int64],
	}
	for i, newValue := range accepted {
		if err := newValue(r, mu); err != nil {
			t.Errorf("accepted[%d]: %v", i, err)
		}
	}
}

func TestNewValueRegionTooSmall(t *testing.T) {
	const need = 8 + 16 // the header and plainInner: 6 bytes, 2 of padding, 8
	if got := shm.ValueSize[plainInner](); got != need {
		t.Fatalf("ValueSize = %d, want %d", got, need)
	}
	name := regionName(t)
	r, err := shm.Create(name, need-1)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mu, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	defer mu.Close()
	_, err = shm.NewValue[plainInner](r, mu)
	if want := fmt.Sprintf("region of %d bytes is too small: it needs %d", need-1, need); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("NewValue on a small region: %v, want an error with %q", err, want)
	}
	if _, err := shm.NewValue[plainInner](nil, mu); err == nil {
		t.Error("NewValue with a nil region succeeded")
	}
	if _, err := shm.NewValue[plainInner](r, nil); err == nil {
		t.Error("NewValue with a nil mutex succeeded")
	}
}

func TestValueSize(t *testing.T) {
	for _, tt := range []struct {
		got, want int
	}{
		{shm.ValueSize[struct{}](), 8},
		{shm.ValueSize[byte](), 16},
		{shm.ValueSize[[3]byte](), 16},
		{shm.ValueSize[uint64](), 16},
		{shm.ValueSize[[9]byte](), 24},
		{shm.ValueSize[uniform](), 8 + 128},
	} {
		if tt.got != tt.want {
			t.Errorf("ValueSize = %d, want %d", tt.got, tt.want)
		}
	}
}

// The layout is documented: the counter at offset 0, the T at offset 8, in
// the machine's byte order; nothing past ValueSize is touched.
func TestValueLayout(t *testing.T) {
	name := regionName(t)
	r, err := shm.Create(name, 64)
	if errors.Is(err, errors.ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mu, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	defer mu.Close()
	b := r.Bytes()
	size := shm.ValueSize[[11]byte]()
	for i := size; i < len(b); i++ {
		b[i] = 0xAA
	}
	v, err := shm.NewValue[[11]byte](r, mu)
	if err != nil {
		t.Fatal(err)
	}
	if got := v.Load(); got != [11]byte{} {
		t.Errorf("a new region holds %v, want the zero value", got)
	}
	for range 3 {
		if err := v.Update(func(p *[11]byte) {
			for i := range p {
				p[i]++
			}
		}); err != nil {
			t.Fatal(err)
		}
	}
	if seq := *(*uint64)(unsafe.Pointer(&b[0])); seq != 6 {
		t.Errorf("sequence %d after three Updates, want 6", seq)
	}
	want := [11]byte{3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3}
	if got := [11]byte(b[8:19]); got != want {
		t.Errorf("bytes 8 to 19 of the region: %v, want %v", got, want)
	}
	if got := v.Load(); got != want {
		t.Errorf("Load = %v, want %v", got, want)
	}
	if unsafe.Pointer(v.Pointer()) != unsafe.Pointer(&b[8]) {
		t.Error("Pointer does not point at offset 8 of the region")
	}
	for i := size; i < len(b); i++ {
		if b[i] != 0xAA {
			t.Fatalf("byte %d past ValueSize (%d) changed to %#x", i, size, b[i])
		}
	}
}

// Goroutines of one process may share a Value: Updates exclude each other
// through the Mutex, and Loads are consistent.
func TestValueGoroutines(t *testing.T) {
	_, v, _ := newValue[uniform](t)
	const writers, readers, n = 4, 4, 500
	var wg sync.WaitGroup
	errs := make(chan error, writers+readers)
	for range writers {
		wg.Go(func() {
			for range n {
				if err := v.Update(func(u *uniform) { u.set(u.W[0] + 1) }); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	for range readers {
		wg.Go(func() {
			for range 10 * n {
				if u := v.Load(); u.torn() {
					errs <- fmt.Errorf("torn: %v", u.W)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if u := v.Load(); u.torn() || u.W[0] != writers*n {
		t.Errorf("after %d Updates: %v", writers*n, u.W)
	}
}

// Load takes its snapshot without allocating.
func TestValueLoadAllocs(t *testing.T) {
	_, v, _ := newValue[uniform](t)
	if n := testing.AllocsPerRun(100, func() { _ = v.Load() }); n != 0 {
		t.Errorf("Load allocates %v times", n)
	}
}

// A panicking fn publishes nothing and releases the mutex.
func TestValueUpdatePanics(t *testing.T) {
	name, v, _ := newValue[counters](t)
	if err := v.Update(func(c *counters) { c.Total = 1 }); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Update did not pass on fn's panic")
			}
		}()
		v.Update(func(c *counters) {
			c.Total = 2
			panic("fn")
		})
	}()
	if got := v.Load().Total; got != 1 {
		t.Errorf("total %d after a panicking Update, want 1", got)
	}
	other, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if ok, err := other.TryLock(); !ok || err != nil {
		t.Fatalf("TryLock after a panicking Update: %v, %v", ok, err)
	}
	other.Unlock()
}

// UpdateContext gives up waiting for a mutex held elsewhere when its
// context is done.
func TestValueUpdateContext(t *testing.T) {
	name, v, _ := newValue[counters](t)
	other, err := shm.OpenMutex(name)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := other.Lock(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	if err := v.UpdateContext(ctx, func(*counters) { called = true }); !errors.Is(err, context.Canceled) || called {
		t.Errorf("UpdateContext with a held mutex and a done context: %v, fn called %v", err, called)
	}
	if err := other.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := v.UpdateContext(context.Background(), func(c *counters) { c.Flag = true }); err != nil {
		t.Fatal(err)
	}
	if !v.Load().Flag {
		t.Error("UpdateContext did not publish")
	}
}
