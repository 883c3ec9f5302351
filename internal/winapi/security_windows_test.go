package winapi

import (
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/windows"
)

// TestObjectsOwnedByUser: what the library makes belongs to the user, not
// to the token's default owner, which for an elevated process is
// Administrators (and under Wine a group): an elevated primary's objects
// must pass the owner check of the same user's launches that are not.
func TestObjectsOwnedByUser(t *testing.T) {
	user, err := UserSID()
	if err != nil {
		t.Fatal(err)
	}
	def, err := defaultOwner()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("user %s, default owner %s", user, def)
	for _, shared := range []bool{false, true} {
		sa, err := SecurityAttributes(shared)
		if err != nil {
			t.Fatal(err)
		}
		name, err := windows.UTF16PtrFromString(fmt.Sprintf(`Local\go-instance-owner-test-%d-%t`, os.Getpid(), shared))
		if err != nil {
			t.Fatal(err)
		}
		h, err := windows.CreateEvent(sa, 0, 0, name)
		if err != nil {
			t.Fatal(err)
		}
		defer windows.CloseHandle(h)
		sd, err := windows.GetSecurityInfo(h, windows.SE_KERNEL_OBJECT, windows.OWNER_SECURITY_INFORMATION)
		if err != nil {
			t.Fatal(err)
		}
		owner, _, err := sd.Owner()
		if err != nil {
			t.Fatal(err)
		}
		if !owner.Equals(user) {
			t.Errorf("shared %t: owner %s, want the user %s", shared, owner, user)
		}
	}
}
