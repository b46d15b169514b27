<?php

// A second front controller in a sub folder of the document root (as some deployments keep
// one for a sub-application): it boots the same application.

declare(strict_types=1);

require __DIR__ . '/../index.php';
