/* name.c: the name rule (name.h). Byte tests, not <ctype.h>: the locale must not widen it. */
#include "name.h"

static bool s_name_char(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '.' || ch == '_' || ch == '-';
}

bool name_ok(const char *s)
{
    if (!s[0] || s[0] == '.')
        return false;
    for (; *s; s++)
        if (!s_name_char(*s))
            return false;
    return true;
}

bool name_has_id_form(const char *s)
{
    if (s[0] != 'w' || !s[1])
        return false;
    for (s++; *s; s++)
        if (*s < '0' || *s > '9')
            return false;
    return true;
}
