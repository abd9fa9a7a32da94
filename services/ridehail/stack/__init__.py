"""`ridehail up`: run the whole stack as supervised child processes."""
