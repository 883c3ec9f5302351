package instance

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-instance/instance/handoff"
	"github.com/go-instance/instance/internal/tuning"
)

// Scope says which launches count as the same application.
type Scope int

const (
	// ScopeSession: one primary per user and graphical session (the
	// default). On Unix the session is the display ($WAYLAND_DISPLAY, else
	// $DISPLAY); launches without one share one primary per user, apart
	// from ScopeUser's.
	ScopeSession Scope = iota
	// ScopeUser: one primary per user, whatever the session.
	ScopeUser
	// ScopeMachine: one primary for every user of the machine. Any local
	// user can then forward messages to it.
	ScopeMachine
)

// String names the scope: "session", "user" or "machine".
func (s Scope) String() string {
	switch s {
	case ScopeSession:
		return "session"
	case ScopeUser:
		return "user"
	case ScopeMachine:
		return "machine"
	}
	return fmt.Sprintf("Scope(%d)", int(s))
}

// Defaults.
const (
	DefaultTimeout    = 20 * time.Second
	DefaultMaxMessage = 16 << 20
)

// An Option configures Acquire.
type Option func(*config)

type config struct {
	appID      string
	args       []string
	argsSet    bool
	data       []byte
	env        []string
	scope      Scope
	dir        string
	key        string
	timeout    time.Duration
	maxMessage int
	bell       uint32 // doorbell kind; 0: the platform's own
	layout     handoff.Layout
}

// WithArgs sets the arguments to forward (default os.Args[1:]). They travel
// as exact bytes: nothing is joined, split or re-encoded.
func WithArgs(args []string) Option {
	return func(c *config) { c.args, c.argsSet = slices.Clone(args), true }
}

// WithData attaches an arbitrary payload to the forwarded message.
func WithData(data []byte) Option {
	return func(c *config) { c.data = slices.Clone(data) }
}

// WithEnv forwards these environment variables, when set, in addition to
// XDG_ACTIVATION_TOKEN and DESKTOP_STARTUP_ID, which are always forwarded.
func WithEnv(names ...string) Option {
	return func(c *config) { c.env = append(c.env, names...) }
}

// WithScope sets the scope (default ScopeSession).
func WithScope(s Scope) Option {
	return func(c *config) { c.scope = s }
}

// WithDir puts the instance's files in dir, an existing directory, instead
// of the scope's directory. Launches that use the same dir, app id, key and
// scope are the same application, whatever their graphical session (on
// Windows, of the same user and session: the objects are the session's).
// It cannot be used with ScopeMachine, whose files have a place of their
// own: Acquire returns ErrInvalidName.
func WithDir(dir string) Option {
	return func(c *config) { c.dir = dir }
}

// WithKey narrows the instance to a key, say a profile or a document: one
// primary per app id and key.
func WithKey(key string) Option {
	return func(c *config) { c.key = key }
}

// WithTimeout bounds how long a secondary waits in all, from the call to the
// primary's reply (default DefaultTimeout).
func WithTimeout(d time.Duration) Option {
	return func(c *config) { c.timeout = d }
}

// WithMaxMessage bounds the size of a forwarded message and of a reply, in
// encoded bytes (default DefaultMaxMessage, 16 MiB). Larger messages
// stream through the shared region in chunks.
func WithMaxMessage(n int) Option {
	return func(c *config) { c.maxMessage = n }
}

// withBell chooses the doorbell mechanism; tests use it to run the portable
// path on Linux.
func withBell(kind uint32) Option {
	return func(c *config) {
		if kind != 0 {
			c.bell = kind
		}
	}
}

// Always forwarded: the tokens with which a desktop lets the primary take
// the focus. Sorted, as a message's environment is.
var activationEnv = []string{"DESKTOP_STARTUP_ID", "XDG_ACTIVATION_TOKEN"}

func newConfig(appID string, opts []Option) (*config, error) {
	c := &config{
		appID:      appID,
		timeout:    DefaultTimeout,
		maxMessage: DefaultMaxMessage,
		layout:     handoff.DefaultLayout,
		bell:       defaultBell,
	}
	if tuning.PortableDoorbell && c.bell == bellFutex {
		c.bell = bellFIFO
	}
	for _, o := range opts {
		o(c)
	}
	if !c.argsSet && len(os.Args) > 1 {
		c.args = slices.Clone(os.Args[1:])
	}
	if err := checkName("app id", appID, false); err != nil {
		return nil, err
	}
	if err := checkName("key", c.key, true); err != nil {
		return nil, err
	}
	switch {
	case c.scope < ScopeSession || c.scope > ScopeMachine:
		return nil, fmt.Errorf("%w: unknown scope %d", ErrInvalidName, int(c.scope))
	case c.dir != "" && c.scope == ScopeMachine:
		return nil, fmt.Errorf("%w: WithDir with ScopeMachine, whose files have a place of their own", ErrInvalidName)
	case c.timeout <= 0:
		return nil, fmt.Errorf("%w: timeout %v is not positive", ErrInvalidName, c.timeout)
	case c.maxMessage <= 0:
		return nil, fmt.Errorf("%w: maximum message size %d is not positive", ErrInvalidName, c.maxMessage)
	}
	for _, name := range c.env {
		if name == "" || strings.ContainsAny(name, "=\x00") {
			return nil, fmt.Errorf("%w: environment variable name %q", ErrInvalidName, name)
		}
	}
	return c, nil
}

// checkName accepts 1 to 128 letters, digits, '.', '_' and '-', not starting
// with '.' or '-': reverse-DNS ids such as com.example.Editor, and keys.
func checkName(what, s string, emptyOK bool) error {
	if s == "" {
		if emptyOK {
			return nil
		}
		return fmt.Errorf("%w: empty %s", ErrInvalidName, what)
	}
	if len(s) > 128 {
		return fmt.Errorf("%w: %s of %d bytes, the limit is 128", ErrInvalidName, what, len(s))
	}
	if s[0] == '.' || s[0] == '-' {
		return fmt.Errorf("%w: %s %q starts with %q", ErrInvalidName, what, s, s[0])
	}
	for i, c := range s {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' {
			continue
		}
		return fmt.Errorf("%w: %s %q has %q at byte %d; use letters, digits, '.', '_' and '-'", ErrInvalidName, what, s, c, i)
	}
	return nil
}
