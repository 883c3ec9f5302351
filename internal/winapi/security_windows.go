package winapi

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/windows"
)

// UserSID is the SID of the process token's user, asked for once: every
// launch needs it several times (names, DACLs, owner checks).
var UserSID = sync.OnceValues(func() (*windows.SID, error) {
	u, err := windows.GetCurrentProcessToken().GetTokenUser()
	if err != nil {
		return nil, os.NewSyscallError("GetTokenUser", err)
	}
	return u.User.Sid, nil
})

// defaultOwner is the owner the process token gives the objects it makes,
// asked for once.
var defaultOwner = sync.OnceValues(func() (*windows.SID, error) {
	n := uint32(64)
	for {
		b := make([]byte, n)
		err := windows.GetTokenInformation(windows.GetCurrentProcessToken(), windows.TokenOwner, &b[0], n, &n)
		if err == nil {
			return (*struct{ Owner *windows.SID })(unsafe.Pointer(&b[0])).Owner, nil
		}
		if err != windows.ERROR_INSUFFICIENT_BUFFER {
			return nil, os.NewSyscallError("GetTokenInformation", err)
		}
	}
})

// SecurityAttributes gives a new kernel object or file the current user as
// its owner and a DACL: full access for that user alone, or for everyone
// when shared. The owner is explicit because the token's default one is
// Administrators in an elevated process, whose objects the same user's
// launches that are not elevated would then refuse (see CheckOwner). The
// handle it makes is not inheritable.
func SecurityAttributes(shared bool) (*windows.SecurityAttributes, error) {
	sid, err := UserSID()
	if err != nil {
		return nil, err
	}
	who := "WD" // everyone
	if !shared {
		who = sid.String()
	}
	sd, err := windows.SecurityDescriptorFromString("O:" + sid.String() + "D:P(A;;GA;;;" + who + ")")
	if err != nil {
		return nil, err
	}
	sa := &windows.SecurityAttributes{SecurityDescriptor: sd}
	sa.Length = uint32(unsafe.Sizeof(*sa))
	return sa, nil
}

// CheckOwner returns an error unless the kernel object h belongs to the
// current user: its owner is the token's user (as for every object made
// with SecurityAttributes), or the token's default owner for new objects,
// which a program of the user's own may have made (Administrators for an
// elevated process; a group under Wine). An object another user made under
// our name is refused, so that nobody can squat a per-user name with a DACL
// of their choosing.
func CheckOwner(h windows.Handle) error {
	sd, err := windows.GetSecurityInfo(h, windows.SE_KERNEL_OBJECT, windows.OWNER_SECURITY_INFORMATION)
	if err != nil {
		return err
	}
	owner, _, err := sd.Owner()
	if err != nil {
		return err
	}
	sid, err := UserSID()
	if err != nil {
		return err
	}
	def, err := defaultOwner()
	if err != nil {
		return err
	}
	if owner.Equals(sid) || owner.Equals(def) {
		return nil
	}
	return fmt.Errorf("owned by %s: %w", owner, ErrNotOwner)
}

// ErrNotOwner is CheckOwner's error for an object of another user's.
var ErrNotOwner = errors.New("not this user's")

// CreateEvent makes the named auto-reset event, with SecurityAttributes, or
// opens it if it exists, when it must be the user's unless shared (see
// CheckOwner). Its errors name the event.
func CreateEvent(name string, shared bool) (windows.Handle, error) {
	name16, err := windows.UTF16PtrFromString(name)
	if err != nil {
		return 0, &os.PathError{Op: "CreateEvent", Path: name, Err: err}
	}
	sa, err := SecurityAttributes(shared)
	if err != nil {
		return 0, &os.PathError{Op: "CreateEvent", Path: name, Err: err}
	}
	h, err := windows.CreateEvent(sa, 0, 0, name16)
	if h == 0 {
		return 0, &os.PathError{Op: "CreateEvent", Path: name, Err: err}
	}
	if errors.Is(err, windows.ERROR_ALREADY_EXISTS) && !shared {
		if err := CheckOwner(h); err != nil {
			windows.CloseHandle(h)
			return 0, &os.PathError{Op: "CreateEvent", Path: name, Err: err}
		}
	}
	return h, nil
}
