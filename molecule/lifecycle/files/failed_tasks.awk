# Prints each task that failed in an ansible-playbook log (default callback): its TASK
# line and its fatal/failed lines, but not those Ansible then ignored (ignore_errors).
/^TASK \[/ { task = $0; next }
/^\.\.\.ignoring$/ { pending = ""; next }
{
    if (pending != "") { print pending; pending = "" }
}
/^(fatal|failed): \[/ { pending = task "\n" $0 }
END { if (pending != "") print pending }
