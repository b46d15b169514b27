<?php

// The public gallery pages of the fotospiel app (see routes/api.php for the naming).

declare(strict_types=1);

use App\Http\Controllers\GuestController;
use Illuminate\Support\Facades\Route;

Route::any('gallery/{token}/download', GuestController::class)
    ->middleware('signed')
    ->name('gallery_download.web');
Route::any('gallery/{token}', GuestController::class)->name('gallery.web');
Route::any('gallery/{token}/{any}', GuestController::class)
    ->where('any', '.*')
    ->name('gallery.web-any');

Route::get('/', GuestController::class)->name('other.home');
