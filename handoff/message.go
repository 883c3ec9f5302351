package handoff

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
)

// Message is what a secondary launch forwards. Strings hold exact bytes:
// arguments that are not valid UTF-8 travel unchanged.
type Message struct {
	Args []string
	Dir  string
	Env  []EnvVar // sorted by name, names unique
	PID  int
	Time int64 // Unix nanoseconds
	Data []byte
}

// EnvVar is one forwarded environment variable.
type EnvVar struct{ Name, Value string }

// Encoding, version 1, little-endian:
//
//	u32 argc, then argc × (u32 len, bytes)
//	u32 len, dir
//	u32 envc, then envc × (u32 len, name, u32 len, value), names strictly increasing
//	i64 pid, i64 time
//	u32 len, data
//
// Every length is checked against what remains; nothing may follow the data.

// EncodedSize is the encoded length of m.
func (m *Message) EncodedSize() int {
	n := 4 + 4 + len(m.Dir) + 4 + 16 + 4 + len(m.Data)
	for _, a := range m.Args {
		n += 4 + len(a)
	}
	for _, e := range m.Env {
		n += 8 + len(e.Name) + len(e.Value)
	}
	return n
}

// Encode appends the encoding of m to b. It fails if a field is longer than
// 4 GiB or the environment is not sorted and unique.
func (m *Message) Encode(b []byte) ([]byte, error) {
	for i := 1; i < len(m.Env); i++ {
		if m.Env[i-1].Name >= m.Env[i].Name {
			return nil, fmt.Errorf("handoff: environment not sorted and unique at %q", m.Env[i].Name)
		}
	}
	if uint64(len(m.Args)) > math.MaxUint32 || uint64(len(m.Env)) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: too many fields", ErrTooLarge)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Args)))
	var err error
	for _, a := range m.Args {
		if b, err = appendString(b, a); err != nil {
			return nil, err
		}
	}
	if b, err = appendString(b, m.Dir); err != nil {
		return nil, err
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(m.Env)))
	for _, e := range m.Env {
		if b, err = appendString(b, e.Name); err != nil {
			return nil, err
		}
		if b, err = appendString(b, e.Value); err != nil {
			return nil, err
		}
	}
	b = binary.LittleEndian.AppendUint64(b, uint64(int64(m.PID)))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.Time))
	return appendString(b, string(m.Data))
}

func appendString(b []byte, s string) ([]byte, error) {
	if uint64(len(s)) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: field of %d bytes", ErrTooLarge, len(s))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...), nil
}

// DecodeMessage decodes b, which is untrusted.
func DecodeMessage(b []byte) (*Message, error) {
	d := decoder{b: b}
	m := &Message{}
	argc := d.count(4)
	if argc > 0 {
		m.Args = make([]string, argc)
	}
	for i := range m.Args {
		m.Args[i] = d.string()
	}
	m.Dir = d.string()
	envc := d.count(8)
	if envc > 0 {
		m.Env = make([]EnvVar, envc)
	}
	for i := range m.Env {
		m.Env[i] = EnvVar{Name: d.string(), Value: d.string()}
		if d.err == nil && i > 0 && strings.Compare(m.Env[i-1].Name, m.Env[i].Name) >= 0 {
			d.fail("environment not sorted and unique")
		}
	}
	m.PID = int(int64(d.u64()))
	m.Time = int64(d.u64())
	if data := d.string(); len(data) > 0 {
		m.Data = []byte(data)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail(fmt.Sprintf("%d trailing bytes", len(d.b)))
	}
	if d.err != nil {
		return nil, d.err
	}
	return m, nil
}

// Reply encoding: i32 exit code, then the data to the end.

// EncodeReply encodes an exit code and data.
func EncodeReply(code int32, data []byte) []byte {
	b := make([]byte, 4, 4+len(data))
	binary.LittleEndian.PutUint32(b, uint32(code))
	return append(b, data...)
}

// DecodeReply decodes an encoded reply.
func DecodeReply(b []byte) (code int32, data []byte, err error) {
	if len(b) < 4 {
		return 0, nil, fmt.Errorf("%w: reply of %d bytes", ErrMalformed, len(b))
	}
	return int32(binary.LittleEndian.Uint32(b)), b[4:], nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(why string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrMalformed, why)
	}
	d.b = nil
}

func (d *decoder) u32() uint32 {
	if len(d.b) < 4 {
		d.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint32(d.b)
	d.b = d.b[4:]
	return v
}

func (d *decoder) u64() uint64 {
	if len(d.b) < 8 {
		d.fail("truncated")
		return 0
	}
	v := binary.LittleEndian.Uint64(d.b)
	d.b = d.b[8:]
	return v
}

// count reads an element count; each element takes at least min bytes, so a
// count the remaining bytes cannot hold is refused before anything is
// allocated.
func (d *decoder) count(min int) int {
	n := uint64(d.u32())
	if n > uint64(len(d.b)/min) {
		d.fail(fmt.Sprintf("count %d larger than the message", n))
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := uint64(d.u32())
	if n > uint64(len(d.b)) {
		d.fail(fmt.Sprintf("length %d past the end", n))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
