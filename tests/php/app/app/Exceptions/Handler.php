<?php

declare(strict_types=1);

namespace App\Exceptions;

use Illuminate\Foundation\Exceptions\Handler as ExceptionHandler;
use Throwable;

// Renders every error as JSON (the app has no views) and reports to the PHP error log.
class Handler extends ExceptionHandler
{
    protected function shouldReturnJson($request, Throwable $e)
    {
        return true;
    }

    public function report(Throwable $e)
    {
        if ($this->shouldReport($e)) {
            error_log('oracle app: ' . get_class($e) . ': ' . $e->getMessage());
        }
    }
}
