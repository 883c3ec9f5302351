package handoff_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/go-instance/instance/handoff"
)

// wire builds encodings by hand, from the format documented in message.go,
// so that the tests pin the format instead of trusting Encode.
type wire []byte

func (w wire) u32(v uint32) wire { return binary.LittleEndian.AppendUint32(w, v) }
func (w wire) u64(v uint64) wire { return binary.LittleEndian.AppendUint64(w, v) }
func (w wire) str(s string) wire { return append(w.u32(uint32(len(s))), s...) }

// randomString returns n bytes, not necessarily valid UTF-8.
func randomString(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return string(b)
}

// equalMessage compares messages field by field; a nil and an empty slice
// are the same message.
func equalMessage(a, b *handoff.Message) bool {
	return slices.Equal(a.Args, b.Args) && a.Dir == b.Dir && slices.Equal(a.Env, b.Env) &&
		a.PID == b.PID && a.Time == b.Time && bytes.Equal(a.Data, b.Data)
}

func describe(m *handoff.Message) string {
	total := 0
	for _, a := range m.Args {
		total += len(a)
	}
	return fmt.Sprintf("{%d args of %d bytes, dir %q, %d env, pid %d, time %d, %d data bytes}",
		len(m.Args), total, m.Dir, len(m.Env), m.PID, m.Time, len(m.Data))
}

// roundTripMessages are valid messages of every shape the tests care about.
func roundTripMessages() []struct {
	name string
	msg  handoff.Message
} {
	rng := rand.New(rand.NewPCG(1, 2))
	manyArgs := make([]string, 10000)
	for i := range manyArgs {
		manyArgs[i] = randomString(rng, i%17)
	}
	bigArgs := make([]string, 4)
	for i := range bigArgs {
		bigArgs[i] = randomString(rng, 1<<20) // 4 MiB of arguments in all
	}
	payload := make([]byte, 70000)
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	return []struct {
		name string
		msg  handoff.Message
	}{
		{"zero", handoff.Message{}},
		{"no args", handoff.Message{Dir: "/home/user", PID: 4242, Time: 1700000000123456789}},
		{"empty strings", handoff.Message{
			Args: []string{"", "", ""},
			Env:  []handoff.EnvVar{{Name: "", Value: ""}, {Name: "EMPTY", Value: ""}},
			Data: []byte{},
		}},
		{"invalid UTF-8", handoff.Message{
			Args: []string{"\xff\xfe", "a\x00b", "\xc3", "\xed\xa0\x80", "ok"},
			Dir:  "/tmp/\x80\x81",
			Env:  []handoff.EnvVar{{Name: "\xfe", Value: "\xff\x00"}},
		}},
		{"10,000 args", handoff.Message{Args: manyArgs, Dir: "/", PID: 1}},
		{"4 MiB of args", handoff.Message{Args: bigArgs}},
		{"env sorted", handoff.Message{
			Args: []string{"--open", "file.txt"},
			Env: []handoff.EnvVar{
				{Name: "A", Value: "1"},
				{Name: "A=", Value: "2"},
				{Name: "AB", Value: "3"},
				{Name: "DISPLAY", Value: ":0"},
				{Name: "PATH", Value: "/usr/bin:/bin"},
				{Name: "a", Value: "lower"},
				{Name: "é", Value: "accent"},
			},
		}},
		{"payload", handoff.Message{Args: []string{"x"}, Data: payload}},
		{"extreme numbers", handoff.Message{PID: -1, Time: math.MinInt64, Data: []byte{0}}},
		{"max numbers", handoff.Message{PID: math.MaxInt32, Time: math.MaxInt64}},
	}
}

func TestMessageRoundTrip(t *testing.T) {
	for _, tc := range roundTripMessages() {
		t.Run(tc.name, func(t *testing.T) {
			m := &tc.msg
			enc, err := m.Encode(nil)
			if err != nil {
				t.Fatalf("Encode %s: %v", describe(m), err)
			}
			if len(enc) != m.EncodedSize() {
				t.Errorf("Encode wrote %d bytes, EncodedSize says %d", len(enc), m.EncodedSize())
			}
			got, err := handoff.DecodeMessage(enc)
			if err != nil {
				t.Fatalf("DecodeMessage: %v", err)
			}
			if !equalMessage(got, m) {
				t.Fatalf("round trip changed the message:\n got %s\nwant %s", describe(got), describe(m))
			}
			again, err := got.Encode(nil)
			if err != nil || !bytes.Equal(again, enc) {
				t.Fatalf("re-encoding the decoded message differs (err %v)", err)
			}

			// Encode appends to what is there.
			prefix := []byte("prefix")
			appended, err := m.Encode(slices.Clip(prefix))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(appended, prefix) || !bytes.Equal(appended[len(prefix):], enc) {
				t.Fatal("Encode(prefix) is not prefix followed by the encoding")
			}
		})
	}
}

func TestDecodeMessageDoesNotAlias(t *testing.T) {
	m := handoff.Message{Args: []string{"arg"}, Dir: "dir", Env: []handoff.EnvVar{{Name: "K", Value: "V"}}, Data: []byte("data")}
	enc, err := m.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := handoff.DecodeMessage(enc)
	if err != nil {
		t.Fatal(err)
	}
	for i := range enc {
		enc[i] = '!'
	}
	if !equalMessage(got, &m) {
		t.Fatalf("the decoded message changed with its input: %q %q %q %q", got.Args, got.Dir, got.Env, got.Data)
	}
}

func TestEncodeWireFormat(t *testing.T) {
	m := handoff.Message{
		Args: []string{"a", "bc"},
		Dir:  "/d",
		Env:  []handoff.EnvVar{{Name: "K", Value: "v"}, {Name: "L", Value: ""}},
		PID:  7,
		Time: -2,
		Data: []byte("xyz"),
	}
	want := wire{}.u32(2).str("a").str("bc").
		str("/d").
		u32(2).str("K").str("v").str("L").str("").
		u64(7).u64(math.MaxUint64 - 1).
		str("xyz")
	got, err := m.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Encode:\n got % x\nwant % x", got, want)
	}
}

func TestEncodeRefusesBadEnv(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []handoff.EnvVar
	}{
		{"unsorted", []handoff.EnvVar{{Name: "B"}, {Name: "A"}}},
		{"duplicate", []handoff.EnvVar{{Name: "A", Value: "1"}, {Name: "A", Value: "2"}}},
		{"duplicate empty names", []handoff.EnvVar{{Name: ""}, {Name: ""}}},
		{"case sorted but not byte sorted", []handoff.EnvVar{{Name: "a"}, {Name: "B"}}},
		{"unsorted at the end", []handoff.EnvVar{{Name: "A"}, {Name: "C"}, {Name: "D"}, {Name: "B"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := handoff.Message{Args: []string{"x"}, Env: tc.env}
			b, err := m.Encode(nil)
			if err == nil {
				t.Fatalf("Encode accepted environment %q: % x", tc.env, b)
			}
		})
	}
}

// truncationSamples are encodings small enough to cut at every offset, with
// every field present.
func truncationSamples(t *testing.T) [][]byte {
	msgs := []handoff.Message{
		{},
		{Args: []string{"one", "", "three"}, Dir: "/w", Env: []handoff.EnvVar{{Name: "A", Value: "1"}, {Name: "B", Value: ""}}, PID: 9, Time: 10, Data: []byte("payload")},
		{Args: []string{""}, Env: []handoff.EnvVar{{Name: "", Value: ""}}},
		{Data: []byte{0, 0, 0, 0}},
	}
	var out [][]byte
	for _, m := range msgs {
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestDecodeMessageTruncated(t *testing.T) {
	for _, enc := range truncationSamples(t) {
		for k := range len(enc) {
			// A full slice expression: nothing past the cut is reachable.
			cut := bytes.Clone(enc[:k])[:k:k]
			if m, err := handoff.DecodeMessage(cut); err == nil {
				t.Errorf("DecodeMessage accepted %d of %d bytes: %s", k, len(enc), describe(m))
			} else if !errors.Is(err, handoff.ErrMalformed) {
				t.Errorf("DecodeMessage of %d of %d bytes: %v, want ErrMalformed", k, len(enc), err)
			}
		}
		if _, err := handoff.DecodeMessage(enc); err != nil {
			t.Errorf("DecodeMessage of the whole encoding: %v", err)
		}
	}

	// A few cuts of a large encoding too.
	rng := rand.New(rand.NewPCG(3, 4))
	big := handoff.Message{Args: []string{randomString(rng, 300000), "b"}, Data: []byte(randomString(rng, 100000))}
	enc, err := big.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []int{0, 3, 4, 5, 300007, 300008, 300013, len(enc) - 1} {
		if _, err := handoff.DecodeMessage(enc[:k:k]); !errors.Is(err, handoff.ErrMalformed) {
			t.Errorf("DecodeMessage of %d of %d bytes: %v, want ErrMalformed", k, len(enc), err)
		}
	}
}

func TestDecodeMessageTrailingBytes(t *testing.T) {
	for _, enc := range truncationSamples(t) {
		for _, extra := range [][]byte{{0}, {1, 2, 3}, make([]byte, 100)} {
			b := append(bytes.Clone(enc), extra...)
			if _, err := handoff.DecodeMessage(b); !errors.Is(err, handoff.ErrMalformed) {
				t.Errorf("DecodeMessage with %d trailing bytes: %v, want ErrMalformed", len(extra), err)
			}
		}
	}
}

func TestDecodeMessageHugeCounts(t *testing.T) {
	rest := func(w wire) wire { return w.u64(1).u64(2).str("") } // pid, time, data
	filler := make([]byte, 64)
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"argc 2^32-1", append(wire{}.u32(math.MaxUint32), filler...)},
		{"argc 2^31", append(wire{}.u32(1<<31), filler...)},
		{"argc one more than fits", append(wire{}.u32(17), filler...)}, // 64 bytes hold 16 empty args
		{"argc of a byte per arg", append(wire{}.u32(1<<20), make([]byte, 1<<20)...)},
		{"envc of a byte per pair", append(wire{}.u32(0).str("").u32(1<<20), make([]byte, 1<<20)...)},
		{"envc 2^32-1", append(wire{}.u32(0).str("").u32(math.MaxUint32), filler...)},
		{"envc one more than fits", append(wire{}.u32(0).str("").u32(9), filler...)}, // 8 bytes per pair
		{"arg length 2^32-1", append(wire{}.u32(1).u32(math.MaxUint32), filler...)},
		{"dir length 2^32-1", append(wire{}.u32(0).u32(math.MaxUint32), filler...)},
		{"env name length 2^32-1", append(wire{}.u32(0).str("").u32(1).u32(math.MaxUint32), filler...)},
		{"env value length 2^32-1", append(wire{}.u32(0).str("").u32(1).str("K").u32(math.MaxUint32), filler...)},
		{"data length 2^32-1", append(wire{}.u32(0).str("").u32(0).u64(1).u64(2).u32(math.MaxUint32), filler...)},
		{"data length one past the end", append(wire{}.u32(0).str("").u32(0).u64(1).u64(2).u32(5), "abcd"...)},
		{"argc that fits, cut after the args", append(wire{}.u32(16), filler...)}, // 16 empty args, then nothing
		{"one arg too many before a valid tail", rest(wire{}.u32(2).str("only").str("").u32(0))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			m, err := handoff.DecodeMessage(tc.b)
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatalf("DecodeMessage accepted % x: %s", tc.b, describe(m))
			}
			if !errors.Is(err, handoff.ErrMalformed) {
				t.Errorf("DecodeMessage: %v, want ErrMalformed", err)
			}
			if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
				t.Errorf("DecodeMessage of %d bytes allocated %d bytes before failing", len(tc.b), n)
			}
		})
	}
}

func TestDecodeMessageEnvOrder(t *testing.T) {
	enc := func(names ...string) []byte {
		w := wire{}.u32(0).str("").u32(uint32(len(names)))
		for _, n := range names {
			w = w.str(n).str("v")
		}
		return w.u64(0).u64(0).str("")
	}
	for _, names := range [][]string{{"B", "A"}, {"A", "A"}, {"", ""}, {"A", "C", "B"}, {"a", "B"}, {"AB", "A"}} {
		if m, err := handoff.DecodeMessage(enc(names...)); !errors.Is(err, handoff.ErrMalformed) {
			t.Errorf("DecodeMessage with environment %q: %v, want ErrMalformed (got %v)", names, err, m)
		}
	}
	for _, names := range [][]string{{}, {"A"}, {"", "A"}, {"A", "AB", "B", "a"}} {
		m, err := handoff.DecodeMessage(enc(names...))
		if err != nil {
			t.Errorf("DecodeMessage with environment %q: %v", names, err)
			continue
		}
		var got []string
		for _, e := range m.Env {
			got = append(got, e.Name)
		}
		if !slices.Equal(got, names) {
			t.Errorf("environment %q decoded as %q", names, got)
		}
	}
}

func TestReplyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		code int32
		data []byte
	}{
		{0, nil},
		{0, []byte{}},
		{1, []byte("opened 3 files")},
		{-1, []byte{0, 0xff}},
		{math.MinInt32, []byte(strings.Repeat("x", 100000))},
		{math.MaxInt32, []byte("\xff")},
	} {
		b := handoff.EncodeReply(tc.code, tc.data)
		if want := append(wire{}.u32(uint32(tc.code)), tc.data...); !bytes.Equal(b, want) {
			t.Errorf("EncodeReply(%d, %d bytes) = % x, want % x", tc.code, len(tc.data), b[:min(len(b), 16)], want[:min(len(want), 16)])
		}
		code, data, err := handoff.DecodeReply(b)
		if err != nil {
			t.Errorf("DecodeReply(EncodeReply(%d, ...)): %v", tc.code, err)
			continue
		}
		if code != tc.code || !bytes.Equal(data, tc.data) {
			t.Errorf("reply (%d, %d bytes) came back as (%d, %d bytes)", tc.code, len(tc.data), code, len(data))
		}
	}
}

func TestDecodeReplyShort(t *testing.T) {
	for n := range 4 {
		b := []byte{1, 2, 3}[:n]
		if code, data, err := handoff.DecodeReply(b); !errors.Is(err, handoff.ErrMalformed) {
			t.Errorf("DecodeReply of %d bytes = (%d, %q, %v), want ErrMalformed", n, code, data, err)
		}
	}
}
