package winapi

import (
	"unsafe"

	"golang.org/x/sys/windows"
)

// SecurityAttributes gives a new kernel object or file a DACL: full access
// for the current user alone, or for everyone when shared. The handle it
// makes is not inheritable.
func SecurityAttributes(shared bool) (*windows.SecurityAttributes, error) {
	who := "WD" // everyone
	if !shared {
		u, err := windows.GetCurrentProcessToken().GetTokenUser()
		if err != nil {
			return nil, err
		}
		who = u.User.Sid.String()
	}
	sd, err := windows.SecurityDescriptorFromString("D:P(A;;GA;;;" + who + ")")
	if err != nil {
		return nil, err
	}
	sa := &windows.SecurityAttributes{SecurityDescriptor: sd}
	sa.Length = uint32(unsafe.Sizeof(*sa))
	return sa, nil
}
