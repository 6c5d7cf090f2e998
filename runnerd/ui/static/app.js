// runnerd's dashboard: the live parts (no inline script: the CSP allows this file only).
"use strict";
