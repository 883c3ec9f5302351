package shm

import (
	"context"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"
)

// Value is a T shared between processes: a fixed-layout T laid over a
// region, written under a cross-process [Mutex] and read without it.
//
// The region holds a header and the T:
//
//	offset 0   uint64  sequence counter, odd while an Update publishes
//	offset 8   T, then padding to a multiple of 8 bytes
//
// in the byte order and the layout of Go's compiler for the running
// architecture, zeroed in a new region (which then holds the zero T). Every
// process must use the same T on the same GOARCH; the region must be
// writable, at least [ValueSize] bytes, and outlive the Value.
//
// The counter is a sequence lock. A writer holds the mutex, makes the
// counter odd, writes the T and makes the counter even; a reader reads the
// counter, the T and the counter again, and retries if the counter was odd
// or has changed. A program in another language shares the value by
// following the same protocol with atomic (sequentially consistent) loads
// and stores.
//
// T must be plain data, which means the same in every process: booleans,
// integers, floating-point and complex numbers, and arrays and structs of
// them. Pointers, strings, slices, maps, channels, interfaces and funcs
// refer to memory of one process and are refused by [NewValue].
//
// [Value.Update] publishes a change, [Value.Load] takes a consistent
// snapshot, and [Value.Pointer] is direct access for callers that do their
// own locking. A Value may be used by several goroutines at once.
type Value[T any] struct {
	seq  *uint64        // in the mapping: the sequence counter
	data unsafe.Pointer // in the mapping: the T
	mu   *Mutex
}

// valueHeader is the size of a Value's header: the sequence counter.
const valueHeader = 8

// wordSize is the unit in which a Value copies its T.
const wordSize = unsafe.Sizeof(uintptr(0))

// valueLayout is where a T starts in a region, and the bytes a region
// needs: the T is followed by padding to a whole 8-byte word, so that it
// can be copied in whole words.
func valueLayout[T any]() (off, need uintptr) {
	var zero T
	align := max(unsafe.Alignof(zero), valueHeader)
	off = (valueHeader + align - 1) &^ (align - 1)
	return off, off + (unsafe.Sizeof(zero)+7)&^7
}

// ValueSize is the least size of a region that holds a [Value] of T: the
// header and T, rounded up to a whole 8-byte word.
func ValueSize[T any]() int {
	_, need := valueLayout[T]()
	return int(need)
}

// NewValue lays a T over the start of r, with mu as the lock of its
// writers: every process sharing the value must use the mutex of the same
// name. It fails if T is not plain data (the error names the offending
// field and its kind) or r is smaller than [ValueSize]. NewValue writes
// nothing to r.
func NewValue[T any](r *Region, mu *Mutex) (*Value[T], error) {
	typ := reflect.TypeFor[T]()
	if r == nil || mu == nil {
		return nil, fmt.Errorf("shm: Value[%s]: nil Region or Mutex", typ)
	}
	if err := checkPlain(typ, ""); err != nil {
		return nil, fmt.Errorf("shm: Value[%s]: %w", typ, err)
	}
	off, need := valueLayout[T]()
	if uintptr(r.Size()) < need {
		return nil, fmt.Errorf("shm: Value[%s]: region of %d bytes is too small: it needs %d", typ, r.Size(), need)
	}
	base := unsafe.Pointer(unsafe.SliceData(r.Bytes()))
	if uintptr(base)%valueHeader != 0 {
		return nil, fmt.Errorf("shm: Value[%s]: region is not aligned to %d bytes", typ, valueHeader)
	}
	return &Value[T]{seq: (*uint64)(base), data: unsafe.Add(base, off), mu: mu}, nil
}

// checkPlain returns an error if t, at path within the value's type, is or
// holds anything but fixed-size plain data.
func checkPlain(t reflect.Type, path string) error {
	switch t.Kind() {
	case reflect.Bool,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return nil
	case reflect.Array:
		if t.Len() == 0 {
			return nil // holds nothing, as in the idiom _ [0]func()
		}
		return checkPlain(t.Elem(), path+"[i]")
	case reflect.Struct:
		for i := range t.NumField() {
			f := t.Field(i)
			p := f.Name
			if path != "" {
				p = path + "." + f.Name
			}
			if err := checkPlain(f.Type, p); err != nil {
				return err
			}
		}
		return nil
	}
	var kind string
	switch t.Kind() {
	case reflect.Pointer:
		kind = "a pointer"
	case reflect.UnsafePointer:
		kind = "an unsafe.Pointer"
	case reflect.String:
		kind = "a string"
	case reflect.Slice:
		kind = "a slice"
	case reflect.Map:
		kind = "a map"
	case reflect.Chan:
		kind = "a channel"
	case reflect.Interface:
		kind = "an interface"
	case reflect.Func:
		kind = "a func"
	default:
		kind = "a " + t.Kind().String()
	}
	if name := t.String(); !strings.HasSuffix(kind, " "+name) {
		kind += " (" + name + ")"
	}
	var where string
	switch {
	case path == "":
		where = "T"
	case path[0] == '[':
		where = "T" + path
	default:
		where = "field " + path
	}
	return fmt.Errorf("%s is %s: only fixed-size plain data can be shared between processes", where, kind)
}

// Pointer returns the shared T itself, in the region's memory, for
// transparent access to its fields: v.Pointer().Count++. Callers lock what
// needs locking. Reads and writes through it are plain memory accesses,
// which bypass the sequence counter: if any process reads with
// [Value.Load], write with [Value.Update] instead, or a Load may return a
// write through Pointer half done. The pointer is valid until the region
// is closed.
func (v *Value[T]) Pointer() *T { return (*T)(v.data) }

// Load returns a consistent copy of the shared T without taking the mutex:
// never a T that an Update was half-way through publishing. It retries
// while an Update publishes, yielding the processor and then sleeping (up
// to a millisecond at a time) if that takes long.
//
// A process that dies while publishing leaves the T partly written, as its
// writes were when it died, and the counter odd; Load waits until it can
// take the mutex, which the kernel released, and marks the T readable
// again. (So a caller that holds the mutex reads through Pointer: its Load
// would wait for itself.)
func (v *Value[T]) Load() T {
	var w words[T]
	for try := 0; ; try++ {
		seq := atomic.LoadUint64(v.seq)
		if seq&1 == 0 {
			v.copyOut(&w)
			if atomic.LoadUint64(v.seq) == seq {
				return w.v
			}
		}
		v.backOff(try, seq)
	}
}

// Spin limits of Load: it retries at once until spinTries, then yields
// until yieldTries, then sleeps from 1µs, doubling up to maxLoadSleep.
const (
	spinTries    = 100
	yieldTries   = 200
	maxLoadSleep = time.Millisecond
)

func (v *Value[T]) backOff(try int, seq uint64) {
	switch {
	case try < spinTries:
	case try < yieldTries:
		runtime.Gosched()
	default:
		if seq&1 != 0 {
			v.repair()
		}
		time.Sleep(min(time.Microsecond<<min(try-yieldTries, 20), maxLoadSleep))
	}
}

// repair makes an odd counter even if the mutex is free: the writer that
// made it odd held the mutex, and has died.
func (v *Value[T]) repair() {
	if ok, err := v.mu.TryLock(); !ok || err != nil {
		return
	}
	if seq := atomic.LoadUint64(v.seq); seq&1 != 0 {
		atomic.StoreUint64(v.seq, seq+1)
	}
	v.mu.Unlock()
}

// Update takes the mutex, calls fn with a copy of the shared T, and
// publishes the copy, as fn left it, when fn returns. [Value.Load] never
// sees the change half made. fn must not keep the pointer, nor call Update
// (the mutex is not reentrant). If fn panics, nothing is published and the
// mutex is released. The error is one of taking or releasing the mutex.
func (v *Value[T]) Update(fn func(*T)) error {
	if err := v.mu.Lock(); err != nil {
		return err
	}
	return v.update(fn)
}

// UpdateContext is [Value.Update] that gives up waiting for the mutex when
// ctx is done, with ctx's error (see [Mutex.LockContext]).
func (v *Value[T]) UpdateContext(ctx context.Context, fn func(*T)) error {
	if err := v.mu.LockContext(ctx); err != nil {
		return err
	}
	return v.update(fn)
}

// update is Update with the mutex held; it releases it.
func (v *Value[T]) update(fn func(*T)) (err error) {
	defer func() {
		if uerr := v.mu.Unlock(); err == nil {
			err = uerr
		}
	}()
	w := new(words[T])
	v.copyOut(w) // nobody else writes while we hold the mutex
	fn(&w.v)
	seq := atomic.LoadUint64(v.seq)
	if seq&1 != 0 {
		seq++ // a writer died publishing: we publish over what it left
	}
	atomic.StoreUint64(v.seq, seq+1)
	v.copyIn(w)
	atomic.StoreUint64(v.seq, seq+2)
	return nil
}

// words is a T padded to whole machine words, aligned for copying a word
// at a time. T holds no pointers, so neither do words.
type words[T any] struct {
	_ [0]uintptr
	v T
}

// copyOut copies the shared T into w, and copyIn copies w into the shared
// T, a word at a time with atomic loads and stores. The words are not
// atomic as a whole (the sequence counter sees to that), but atomic
// operations are ordered with those on the counter on every architecture,
// which plain copies are not: a weakly ordered processor could otherwise
// read the T after the counter's second read, or write it before the
// counter turns odd. The shared T is followed by padding to a whole word
// (see valueLayout), so the last word stays inside the value. Memory of a
// mapping lies outside the Go heap, which the race detector and checkptr
// leave alone.
func (v *Value[T]) copyOut(w *words[T]) {
	dst := unsafe.Pointer(w)
	for i := uintptr(0); i < unsafe.Sizeof(*w); i += wordSize {
		*(*uintptr)(unsafe.Add(dst, i)) = atomic.LoadUintptr((*uintptr)(unsafe.Add(v.data, i)))
	}
}

func (v *Value[T]) copyIn(w *words[T]) {
	src := unsafe.Pointer(w)
	for i := uintptr(0); i < unsafe.Sizeof(*w); i += wordSize {
		atomic.StoreUintptr((*uintptr)(unsafe.Add(v.data, i)), *(*uintptr)(unsafe.Add(src, i)))
	}
}
